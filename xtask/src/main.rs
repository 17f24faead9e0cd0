//! `cargo xtask …`: parses flags and hands them to the `xtask` library (see `lib.rs`).

use clap::Parser;

fn main() {
    let args = xtask::flags::Xtask::parse();
    if let Err(error) = xtask::run(args) {
        eprintln!("error: {error:#}");
        std::process::exit(xtask::exit_code(&error));
    }
}
