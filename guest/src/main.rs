//! `berth-agent`: PID 1 of a berth microVM, or (with `--fd N`) an ordinary process serving
//! one session on an inherited descriptor, for debugging and tests.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use berth_agent::protocol::Frame;
use berth_agent::session::{serve, SessionConfig};

mod init;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--fd") {
        let Some(fd) = args.get(i + 1).and_then(|v| v.parse::<i32>().ok()) else {
            eprintln!("berth-agent: --fd needs a descriptor number");
            std::process::exit(2);
        };
        // SAFETY: the caller hands us this descriptor and does not use it again.
        let channel = unsafe { OwnedFd::from_raw_fd(fd) };
        match serve(channel, SessionConfig::default()) {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("berth-agent: {e}");
                std::process::exit(125);
            }
        }
    }
    if std::process::id() != 1 {
        eprintln!("berth-agent: run me as PID 1 of a berth microVM, or with --fd N");
        std::process::exit(2);
    }
    let code = match init::prepare() {
        Ok(channel) => {
            let mut chan =
                std::fs::File::from(channel.try_clone().expect("dup of the agent channel"));
            let _ = Frame::Ready {
                boot_us: init::uptime_us(),
            }
            .write_to(&mut chan);
            match serve(channel, SessionConfig { system: true }) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("berth-agent: {e}");
                    125
                }
            }
        }
        Err(e) => {
            eprintln!("berth-agent: preparing the guest: {e}");
            125
        }
    };
    init::power_off(code, Path::new("/"));
}
