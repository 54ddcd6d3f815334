//! `flame-daemon` binary: everything lives in the library; see `flame_daemon::cli`.

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    std::process::exit(flame_daemon::cli::main_with_args(argv));
}
