//! The `berth` command: parse, call the engine, print. Nothing else lives here.

mod cli;

fn main() {
    // berth's own internal commands (`__exited`, run by a monitor) get descriptors on purpose.
    if !std::env::args_os()
        .nth(1)
        .is_some_and(|a| a.to_string_lossy().starts_with("__"))
    {
        berth::container::dmz::cloexec_inherited();
    }
    std::process::exit(cli::main());
}
