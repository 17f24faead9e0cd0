//! `cargo xtask merge A.json B.json … -o ALL.json`: combine loadgen reports from many hosts.
//!
//! This is the loadgen library's merge ([`loadgen::merge::merge_files`], the same as
//! `loadgen merge`), so there is one implementation of the report format: histograms added
//! exactly and percentiles recomputed from them (never averaged), counts, bytes and errors
//! summed, throughput over the longest window; reports with different schemas or message sizes
//! are refused. See docs/distributed.md for the multi-host path.
//! Try it: `cargo xtask merge results/agents/*.json -o merged.json`.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::error::input_error;
use crate::present::format::format_count;

/// `cargo xtask merge`.
pub fn run(inputs: &[PathBuf], output: &Path) -> Result<()> {
    if inputs.len() < 2 {
        return Err(input_error("merge needs at least two reports"));
    }
    let merged = loadgen::merge::merge_files(inputs, output)?;
    eprintln!(
        "merged {} reports: {} messages verified, {} msg/s, p99 {} µs → {}",
        inputs.len(),
        merged.messages.verified,
        format_count(merged.throughput.messages_per_s),
        merged.latency_us.p99,
        output.display()
    );
    Ok(())
}
