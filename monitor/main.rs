//! `berth-monitor`: the steady state of a detached sandbox's monitor (see `src/monitor/`).
//! berth execs it in place of itself once the sandbox runs; it is small on purpose, since
//! one runs per sandbox. berth's build.rs builds it as a static executable (see there).

// The modules are berth's own; the parts only berth calls (the client side of the protocol,
// the log reader) are compiled here too but not used.
#![allow(dead_code)]

#[path = "../src/clock.rs"]
mod clock;

// The parts of berth's `monitor` module that the program runs, at the top here as they are
// in `berth::monitor` (`super::log` from serve.rs names the same module in both).
#[path = "../src/monitor/log.rs"]
mod log;
#[path = "../src/monitor/proto.rs"]
mod proto;
#[path = "../src/monitor/serve.rs"]
mod serve;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let err = match serve::Config::parse(&args) {
        Ok(cfg) => serve::serve(cfg).to_string(),
        Err(e) => format!("{e} (berth-monitor is started by berth, not by hand)"),
    };
    eprintln!("berth-monitor: {err}");
    std::process::exit(125);
}
