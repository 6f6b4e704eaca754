//! The `marvel` binary; everything lives in the library so that tests reach
//! the same code.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The pane-side helpers run once per session and must stay small, so
    // they are dispatched before any command-line parser is built.
    if let Some(code) = marvel::shim::dispatch(&args) {
        std::process::exit(code);
    }
    // A shell asking for completions (`COMPLETE=bash marvel -- ...`).
    marvel::commands::completions::answer_shell();
    std::process::exit(marvel::cli::run(args));
}
