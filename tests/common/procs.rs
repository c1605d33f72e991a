//! What a test may leave behind, read from /proc: processes and mounts.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A process as the leftover report shows it.
#[derive(Debug, Clone)]
pub struct Process {
    pub pid: i32,
    pub uid: u32,
    pub cmdline: String,
}

impl std::fmt::Display for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} uid {}: {}", self.pid, self.uid, self.cmdline)
    }
}

/// Every process on the host that `keep` selects; the environment is read
/// only when needed (for processes of other users that takes root).
pub fn processes(mut keep: impl FnMut(i32, u32, &dyn Fn() -> Vec<u8>) -> bool) -> Vec<Process> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let dir = entry.path();
        let Some(uid) = real_uid(&dir) else { continue };
        let environ = || fs::read(dir.join("environ")).unwrap_or_default();
        if keep(pid, uid, &environ) {
            let cmdline = fs::read(dir.join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .trim()
                .to_string();
            found.push(Process { pid, uid, cmdline });
        }
    }
    found
}

fn real_uid(dir: &Path) -> Option<u32> {
    let status = fs::read_to_string(dir.join("status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Processes whose environment holds exactly `var` (e.g. `BERTH_ROOT=/tmp/x`).
pub fn with_env(var: &str) -> Vec<Process> {
    let var = var.as_bytes();
    processes(|_, _, environ| environ().split(|b| *b == 0).any(|e| e == var))
}

/// Polls `find` until it reports nothing or `timeout` passes; returns the last report.
pub fn wait_until_gone(timeout: Duration, mut find: impl FnMut() -> Vec<Process>) -> Vec<Process> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = find();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Kills what a failed test left, so that the next tests start clean.
pub fn kill_all(procs: &[Process]) {
    for p in procs {
        let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
    }
}

/// Mount points at or below `dir` in this mount namespace.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().to_string();
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(u8::is_ascii_digit)
        {
            let octal = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("0");
            out.push(u8::from_str_radix(octal, 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
