//! What xtask writes and reads back: every record type of a run directory and its JSON.
//!
//! One submodule per file kind: [`plan`] (the validated bench plan a manifest stores, and the
//! servers it names), [`trial`] (`trials.json`: one record per trial), [`summary`] (the rows of
//! `summary.json`), [`matrix`] (`matrix.json`: the verdict per workload), [`capacity`] (`capacity.json`), [`regress`] (`regress.json`),
//! [`calibration`] (`calibration.json`, on `regress`), [`manifest`]
//! (`manifest.json`), and [`loadgen_report`] (the numbers xtask takes from loadgen's own JSON).
//! `results/README.md` documents every key; keys are contracts (added, never renamed).
//!
//! Reasons and sides are enums in the code and their exact historical words in the files: an
//! enum that logic reads back from a file (a step's reasons, a trial's failure) serializes as
//! its text and parses it again, with a variant that keeps any text it does not recognise; text
//! written only for people and scripts (`excluded_pairs`, `stopped_because`) is rendered from
//! the enum once, when the file is written.
//!
//! Layer: records sit on the foundation (`flags`, `stats`, `error`) and on `shell` (the
//! manifest asks git and the kernel); nothing here starts a measured process or draws anything.

pub mod calibration;
pub mod capacity;
pub mod loadgen_report;
pub mod manifest;
pub mod matrix;
pub mod plan;
pub mod regress;
pub mod summary;
pub mod trial;

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Writes `bytes` to `path` through a temporary file renamed into place, so a crash (or a
/// reader that looks while a run is going) never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = Path::new(&temporary);
    std::fs::write(temporary, bytes).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(temporary, path).with_context(|| format!("writing {}", path.display()))
}

/// Writes pretty JSON (and a final newline) to `path`, atomically (see [`write_atomic`]).
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    write_atomic(path, (text + "\n").as_bytes())
}

/// Reads and parses a JSON file, naming the file in any error.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// A record kept as one JSON file in a run directory: `trials.json`, `capacity.json`,
/// `regress.json`.
pub trait RunFile: Serialize + DeserializeOwned {
    /// Its file name inside a run directory.
    const FILE: &'static str;
    /// The schema id its `schema` key holds.
    const SCHEMA: &'static str;

    /// Its `schema` key.
    fn schema(&self) -> &str;

    /// Reads it from a run directory; a file of another schema is an error.
    fn read(run_dir: &Path) -> Result<Self> {
        let file: Self = read_json(&run_dir.join(Self::FILE))?;
        if file.schema() != Self::SCHEMA {
            bail!(
                "{} has schema {:?}, expected {}",
                Self::FILE,
                file.schema(),
                Self::SCHEMA
            );
        }
        Ok(file)
    }

    /// Writes it into a run directory (atomically, see [`write_json`]).
    fn write(&self, run_dir: &Path) -> Result<()> {
        write_json(&run_dir.join(Self::FILE), self)
    }
}

/// `Some(candidate)` when it prints as exactly `text`: a sentence parsed back into a variant
/// must say the same words again.
pub(crate) fn same_words<T: std::fmt::Display>(candidate: T, text: &str) -> Option<T> {
    (candidate.to_string() == text).then_some(candidate)
}
