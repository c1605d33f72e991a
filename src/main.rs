//! The `berth` command: parse, call the engine, print. Nothing else lives here.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
