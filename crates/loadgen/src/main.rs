//! The `loadgen` binary: all logic lives in the library (`loadgen::cli`).

fn main() {
    if let Err(e) = loadgen::cli::install_signal_handlers() {
        eprintln!("warning: {e:#}; Ctrl-C will end loadgen without a report");
    }
    let code = loadgen::cli::main_with(
        std::env::args_os(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    std::process::exit(code);
}
