//! `loadgen`: a TCP echo load generator that verifies every echoed byte and measures latency
//! honestly (coordinated omission corrected in open loop), built as a library with a thin CLI.
//!
//! - [`Config`] is the whole configuration; [`run`] / [`run_with`] measure and return a
//!   [`Report`] (the JSON report, `report::SCHEMA`).
//! - [`timing`] decides how client threads wait (`--timing`); [`validity`] says when a
//!   measurement cannot be trusted, and why.
//! - [`report::decode_histogram`] turns a serialized histogram back into
//!   `hdrhistogram::Histogram<u64>`; [`env::capture`] records host, cores, kernel and commit.
//! - [`summary::write_summary`] prints the human summary to any writer; [`cli::main_with`] is
//!   the whole command line (the binary only calls it).
//!
//! Try it: `cargo run --release -p echo-server &` then
//! `cargo run --release -p loadgen -- --target 127.0.0.1:7878 --connections 64 --duration 5s`.

pub mod baseline;
mod buffer;
pub mod cli;
pub mod config;
pub mod env;
pub mod errors;
pub mod hgrm;
pub mod hlog;
pub mod merge;
pub mod payload;
pub mod report;
pub mod run;
pub mod slo;
pub mod stats;
pub mod summary;
pub mod timing;
pub mod validity;
mod worker;

pub use config::{Arrival, Config, RateStep, TimingMode};
pub use errors::{ErrorKind, ErrorSample};
pub use report::{Report, StepReport};
pub use run::{NoObserver, Observer, Progress, run, run_with};
