//! The baseline of `regress --baseline REF`: the ref resolved to a commit, checked out in a
//! temporary git worktree (removed again on drop, even when the build fails) and built there
//! with a cached target directory (`target/xtask-regress`), its binaries kept beside it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::error::input_error;
use crate::flags::BuildProfile;
use crate::shell::{self, Binaries, command_output};

/// A git worktree removed again on drop.
struct Worktree {
    root: PathBuf,
    path: PathBuf,
}

impl Drop for Worktree {
    fn drop(&mut self) {
        let _ = Command::new("git")
            .args(["worktree", "remove", "--force"])
            .arg(&self.path)
            .current_dir(&self.root)
            .status();
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Resolves REF to a commit id; an unknown ref is an input error.
pub fn resolve_ref(root: &Path, git_ref: &str) -> Result<String> {
    command_output(
        "git",
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{git_ref}^{{commit}}"),
        ],
        root,
    )
    .filter(|commit| !commit.is_empty())
    .ok_or_else(|| {
        input_error(format!(
            "--baseline {git_ref:?} is not a commit in this repository"
        ))
    })
}

/// Checks `commit` out in a fresh temporary worktree (detached), removed again on drop.
fn checkout_worktree(root: &Path, commit: &str) -> Result<Worktree> {
    // A regress killed hard (a second Ctrl-C, SIGKILL) leaves a registered worktree whose
    // directory may be gone; prune those records first so they never pile up.
    let _ = Command::new("git")
        .args(["worktree", "prune"])
        .current_dir(root)
        .status();
    let path = std::env::temp_dir().join(format!(
        "echolab-baseline-{}-{}",
        &commit[..commit.len().min(12)],
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&path);
    eprintln!("$ git worktree add --detach {} {commit}", path.display());
    let status = Command::new("git")
        .args(["worktree", "add", "--detach", "--quiet"])
        .arg(&path)
        .arg(commit)
        .current_dir(root)
        .status()
        .context("running git worktree add")?;
    if !status.success() {
        bail!("git worktree add failed for {commit}");
    }
    Ok(Worktree {
        root: root.to_path_buf(),
        path,
    })
}

/// Builds the binaries of `commit` in a temporary worktree with a cached target dir.
pub fn build_baseline(root: &Path, commit: &str, profile: BuildProfile) -> Result<Binaries> {
    let worktree = checkout_worktree(root, commit)?;
    let target = root.join("target").join("xtask-regress");
    let built = shell::build_binaries(&worktree.path, profile, Some(&target))?;
    // Keep copies outside the worktree's lifetime (the target dir is shared and cached).
    let keep = target.join(format!("bin-{}", &commit[..commit.len().min(12)]));
    std::fs::create_dir_all(&keep)?;
    let echo_server = keep.join("echo-server");
    let loadgen = keep.join("loadgen");
    std::fs::copy(&built.echo_server, &echo_server).context("keeping baseline echo-server")?;
    std::fs::copy(&built.loadgen, &loadgen).context("keeping baseline loadgen")?;
    drop(worktree);
    Ok(Binaries {
        echo_server,
        loadgen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_worktree_is_checked_out_and_removed() {
        let root = shell::project_root();
        let commit = resolve_ref(&root, "HEAD").expect("HEAD resolves");
        assert_eq!(commit.len(), 40);
        assert_eq!(
            crate::exit_code(&resolve_ref(&root, "no-such-ref-9c1d").expect_err("unknown")),
            2
        );
        let worktree = checkout_worktree(&root, &commit).expect("worktree");
        let path = worktree.path.clone();
        assert!(path.join("Cargo.toml").is_file());
        assert!(path.join("crates/server/Cargo.toml").is_file());
        let checked_out = command_output("git", &["rev-parse", "HEAD"], &path);
        assert_eq!(checked_out.as_deref(), Some(commit.as_str()));
        drop(worktree);
        assert!(!path.exists(), "the worktree is removed again");
        let listed = command_output("git", &["worktree", "list"], &root).unwrap_or_default();
        assert!(!listed.contains(&path.display().to_string()), "{listed}");
    }
}
