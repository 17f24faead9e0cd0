//! `echo-server`: parses flags and runs the library; see `cli.rs` for the exit codes.

use clap::Parser;

fn main() {
    let args = echo_server::cli::Args::parse();
    if let Err(err) = args.config().validate() {
        eprintln!("echo-server: {err}");
        std::process::exit(2);
    }
    if let Err(err) = echo_server::cli::run(&args) {
        eprintln!("echo-server: {err:#}");
        std::process::exit(1);
    }
}
