//! `berth-monitor`: the steady state of a detached sandbox's monitor (see `berth::monitor`).
//! berth execs it in place of itself once the sandbox runs; it is small on purpose, since
//! one runs per sandbox.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let err = match berth::monitor::Config::parse(&args) {
        Ok(cfg) => berth::monitor::serve(cfg).to_string(),
        Err(e) => format!("{e} (berth-monitor is started by berth, not by hand)"),
    };
    eprintln!("berth-monitor: {err}");
    std::process::exit(125);
}
