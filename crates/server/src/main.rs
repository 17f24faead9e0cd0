//! `echo-server`: parses flags and runs the library; see `cli.rs` for the exit codes.

use clap::Parser;

fn main() {
    let args = echo_server::cli::Args::parse();
    if let Err(err) = echo_server::cli::run(&args) {
        // A configuration the flags could express but the server refuses is a usage error.
        let usage = matches!(
            err.downcast_ref::<echo_server::Error>(),
            Some(echo_server::Error::Config(_))
        );
        eprintln!("echo-server: {err:#}");
        std::process::exit(if usage { 2 } else { 1 });
    }
}
