//! The per-sandbox monitor, berth's conmon: the process that owns a detached sandbox's stdio,
//! log, exit status, `--rm` and restart policy, so that the berth command can exit and come
//! back.
//!
//! One process id, three phases:
//! 1. **set-up** (berth, forked from the command and detached with `setsid`): starts the
//!    sandbox as its own child, records it, tells the waiting command, then
//! 2. **serves** as `berth-monitor`, a small program exec'd in place (so the big berth image
//!    with its relocated tables is gone): a poll loop that logs the output, serves the socket
//!    (attach, wait, stop, kill) and waits for the end; then it execs
//! 3. **`berth __exited`**, which records the end, answers the waiting clients, removes a
//!    `--rm` sandbox, or after the restart back-off starts the sandbox again and goes back
//!    to 2.
//!
//! The sandbox is the monitor's child throughout (stage 1 of a container is cloned by the
//! set-up and carries `PR_SET_PDEATHSIG`): if the monitor is killed, the sandbox goes with
//! it and `berth ps` reports the sandbox as dead. This module holds what the small program
//! needs (the loop, the log writer, the protocol, the restart policy); the program's code
//! uses std and libc only (no async runtime, no JSON), so it stays small.

pub mod launch;
pub mod log;
pub mod policy;
pub mod proto;
pub mod serve;

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

pub use serve::{serve, Config, Output, Sandbox};

/// The name of the monitor program, installed next to `berth`.
pub const PROGRAM: &str = "berth-monitor";

/// Where the monitor program is: `$BERTH_MONITOR`, else next to the running berth.
pub fn program() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("BERTH_MONITOR").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("finding the berth binary: {e}"))?;
    let p = exe.with_file_name(PROGRAM);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{} not found: install it next to {} (`cargo build` builds both; scripts/demo installs both)",
            p.display(),
            exe.display()
        ))
    }
}

/// Runs `f` with a short path to `path` (`/proc/self/fd/N/NAME`), which unix sockets need:
/// their addresses hold at most 107 bytes, and berth's runtime paths can be longer.
fn with_short_path<T>(
    path: &Path,
    f: impl FnOnce(&Path) -> std::io::Result<T>,
) -> std::io::Result<T> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return f(path);
    };
    if path.as_os_str().len() < 100 {
        return f(path);
    }
    let dir = std::fs::File::open(dir)?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    f(&short)
}

/// Creates the listening socket at `path`, replacing a stale one.
pub fn listen(path: &Path) -> std::io::Result<OwnedFd> {
    let _ = std::fs::remove_file(path);
    let l = with_short_path(path, |p| UnixListener::bind(p))?;
    Ok(OwnedFd::from(l))
}

/// Connects to the monitor socket at `path`.
pub fn connect(path: &Path) -> std::io::Result<UnixStream> {
    with_short_path(path, |p| UnixStream::connect(p))
}
