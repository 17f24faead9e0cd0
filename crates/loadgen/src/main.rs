//! The `loadgen` binary: all logic lives in the library (`loadgen::cli`).

fn main() {
    let code = loadgen::cli::main_with(
        std::env::args_os(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    std::process::exit(code);
}
