//! `berth bench`: what each wall costs, measured side by side with the peers installed here.
//!
//! One measuring code for the CLI (`berth bench startup|density`) and for `benches/` (which run
//! `berth bench` as their test user), so the figures in a README table, a chart and a bench
//! run all come from here.
//!
//! Every system is driven as a user would drive it: the berth binary itself (`berth run ...`),
//! `podman run`, `crun run` on a bundle, `bwrap`, `qemu-system-x86_64`; each run is a process
//! started and waited for, with a timeout, so a hung peer becomes a skipped row with the reason
//! rather than a hung bench. A system that is not installed, or fails, is listed as skipped
//! with the reason, never dropped.

pub mod api;
pub mod chart;
pub mod density;
pub mod peers;
pub mod procs;
pub mod report;
pub mod startup;

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::paths::Dirs;

/// Names of every sandbox a bench creates start with this, then the bench's pid, so a
/// clean-up (or a person) can find them.
pub const NAME_PREFIX: &str = "berth-bench-";

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unknown {kind} {name:?}: choose from {choices}")]
    Unknown {
        kind: &'static str,
        name: String,
        choices: String,
    },
    #[error("--chart {}: the file name must end in .svg or .png", .0.display())]
    ChartFormat(PathBuf),
    #[error(
        "no TrueType font found for the chart's labels (looked in /usr/share/fonts): \
         install one (apt-get install fonts-dejavu-core), or set BERTH_CHART_FONT to a .ttf file"
    )]
    NoFont,
    #[error("drawing the chart {}: {reason}", path.display())]
    Chart { path: PathBuf, reason: String },
    #[error("interrupted; the sandboxes this bench started were removed")]
    Interrupted,
    #[error("image {image}: {reason}: pull it (berth pull {image}) or load it (berth load -i FILE), or pass --image")]
    Image { image: String, reason: String },
    #[error("--{flag} must be at least 1")]
    Zero { flag: &'static str },
}

pub(crate) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BenchError {
    let path = path.to_path_buf();
    move |source| BenchError::Io { what, path, source }
}

/// The isolation a system gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Wall {
    Container,
    Vm,
}

impl Wall {
    pub fn parse_list(list: &str) -> Result<Vec<Wall>, BenchError> {
        let mut walls = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let wall = match name {
                "container" => Wall::Container,
                "vm" | "microvm" => Wall::Vm,
                _ => {
                    return Err(BenchError::Unknown {
                        kind: "wall",
                        name: name.into(),
                        choices: "container, vm".into(),
                    })
                }
            };
            if !walls.contains(&wall) {
                walls.push(wall);
            }
        }
        Ok(walls)
    }

    pub fn label(self) -> &'static str {
        match self {
            Wall::Container => "container",
            Wall::Vm => "vm",
        }
    }
}

/// What a bench needs to know about where it runs.
pub struct BenchEnv {
    /// The berth binary the berth rows run (the CLI passes its own executable).
    pub berth: PathBuf,
    pub dirs: Dirs,
    /// Scratch space (peers' storage, bundles, initramfs); removed when the bench ends.
    pub scratch: PathBuf,
    /// The longest one start may take before its system is reported as timed out.
    pub timeout: Duration,
}

impl BenchEnv {
    /// A scratch directory under the cache, named after this process.
    pub fn new(berth: PathBuf, dirs: Dirs) -> Result<BenchEnv, BenchError> {
        let scratch = dirs.cache.join(format!("bench-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).map_err(io("creating", &scratch))?;
        Ok(BenchEnv {
            berth,
            dirs,
            scratch,
            timeout: Duration::from_secs(180),
        })
    }

    /// `berth ARGS`.
    pub fn berth(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.berth);
        cmd.args(args);
        cmd
    }

    /// Fails unless `image` is in berth's store (every system runs it).
    pub fn check_image(&self, image: &str) -> Result<(), BenchError> {
        let out = self
            .berth(&["image", "inspect", image])
            .stdin(Stdio::null())
            .output()
            .map_err(io("running", &self.berth))?;
        if out.status.success() {
            return Ok(());
        }
        Err(BenchError::Image {
            image: image.to_string(),
            reason: last_line(&String::from_utf8_lossy(&out.stderr))
                .trim_start_matches("berth: ")
                .to_string(),
        })
    }

    /// The name of this bench's `index`th sandbox of `kind`.
    pub fn sandbox_name(&self, kind: &str, index: usize) -> String {
        format!("{NAME_PREFIX}{}-{kind}-{index}", std::process::id())
    }
}

impl Drop for BenchEnv {
    fn drop(&mut self) {
        // Peers' storage may hold files owned by subordinate ids (podman's overlay layers):
        // remove what we can; podman's own clean-up ran before this.
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// The machine a report was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub memory_mib: u64,
    pub available_mib: u64,
    /// "kvm", "pvm" (software nested virtualization: no Linux guest boots), or "none".
    pub kvm: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name") || l.starts_with("Model"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let kernel = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let kvm = if !Path::new("/dev/kvm").exists() {
            "none"
        } else if crate::vm::kvm_is_pvm() {
            "pvm"
        } else {
            "kvm"
        };
        Machine {
            cpu,
            cores,
            kernel,
            memory_mib: meminfo("MemTotal:") / 1024,
            available_mib: meminfo("MemAvailable:") / 1024,
            kvm: kvm.into(),
        }
    }

    /// One line for a title: "CPU, N cores, Linux X".
    pub fn describe(&self) -> String {
        format!("{}, {} cores, Linux {}", self.cpu, self.cores, self.kernel)
    }
}

/// A /proc/meminfo figure in KiB (0 when missing).
pub fn meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Median, minimum and maximum of some samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// None for no samples.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: s[0],
            max: s[n - 1],
        })
    }
}

// --- Ctrl-C -------------------------------------------------------------------------------

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catches SIGINT, SIGTERM and SIGHUP for the rest of the process's life: the bench stops
/// measuring, removes what it started and reports [`BenchError::Interrupted`].
pub fn catch_interrupts() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    // No SA_RESTART: a wait in progress returns EINTR and the bench notices at once.
    let action = SigAction::new(
        SigHandler::Handler(on_interrupt),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let _ = unsafe { sigaction(sig, &action) };
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

// --- running one process ------------------------------------------------------------------

/// How one timed process ended.
pub enum Ran {
    /// It exited 0 after this long; its stdout and stderr.
    Ok(Duration, String, String),
    /// It failed: a one-line reason.
    Failed(String),
}

/// Runs `cmd` to its end with its output kept in scratch files, timing it from spawn to exit.
pub fn time_command(env: &BenchEnv, mut cmd: Command) -> Ran {
    let out_path = env.scratch.join("stdout");
    let err_path = env.scratch.join("stderr");
    let (out, err) = match (File::create(&out_path), File::create(&err_path)) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => return Ran::Failed(format!("{}: {e}", env.scratch.display())),
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    let program = cmd.get_program().to_string_lossy().into_owned();
    let start = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Ran::Failed(format!("cannot start {program}: {e}")),
    };
    let status = wait_timeout(&mut child, env.timeout);
    let elapsed = start.elapsed();
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    match status {
        Waited::Exited(status) if status.success() => Ran::Ok(elapsed, stdout, stderr),
        Waited::Exited(status) => Ran::Failed(format!("{status}: {}", last_line(&stderr))),
        Waited::TimedOut => Ran::Failed(format!(
            "did not end within {} s: {}",
            env.timeout.as_secs(),
            last_line(&stderr)
        )),
        Waited::Interrupted => Ran::Failed("interrupted".into()),
    }
}

pub enum Waited {
    Exited(std::process::ExitStatus),
    TimedOut,
    Interrupted,
}

/// Waits for `child` for at most `timeout` (killing it then), or until the bench is
/// interrupted (killing it too). A pidfd makes the wait exact and free of pid reuse.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Waited {
    let deadline = Instant::now() + timeout;
    let pidfd = pidfd_open(child.id() as i32);
    loop {
        if interrupted() {
            let _ = child.kill();
            let _ = child.wait();
            return Waited::Interrupted;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = child.kill();
            let _ = child.wait();
            return Waited::TimedOut;
        }
        match &pidfd {
            Some(fd) => {
                let mut pfd = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                let ms = left.as_millis().min(i32::MAX as u128) as i32;
                // SAFETY: one valid pollfd for the duration of the call.
                let n = unsafe { libc::poll(&mut pfd, 1, ms) };
                if n > 0 {
                    return match child.wait() {
                        Ok(s) => Waited::Exited(s),
                        Err(_) => Waited::TimedOut,
                    };
                }
            }
            None => match child.try_wait() {
                Ok(Some(s)) => return Waited::Exited(s),
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Err(_) => return Waited::TimedOut,
            },
        }
    }
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The last non-empty line of a program's error output.
pub fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no error output")
        .to_string()
}

/// Whether `program` is on PATH (the lookup berth's network backends use).
pub fn have(program: &str) -> Option<PathBuf> {
    crate::net::which(program)
}

/// A progress bar for `len` steps of `what` (hidden when stderr is not a terminal).
pub fn progress(len: usize, what: &str) -> indicatif::ProgressBar {
    // indicatif draws nothing when stderr is not a terminal.
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>28} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_take_the_middle() {
        let s = Summary::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 5.0));
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn walls_parse_and_reject() {
        assert_eq!(
            Wall::parse_list("vm,container,vm").unwrap(),
            vec![Wall::Vm, Wall::Container]
        );
        let e = Wall::parse_list("docker").unwrap_err().to_string();
        assert!(e.contains("container, vm"), "{e}");
    }
}
