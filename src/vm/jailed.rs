//! Starts a microVM in the `berth-vmm` program, jailed, and hears how it ended.
//!
//! berth opens what the VM reads (/dev/kvm, the kernel, the initrd, the disks, the shared
//! directories), creates the report pipe, and starts the program with those descriptors at
//! 3, 4, … and a [`Launch`] naming them on descriptor 3 (see `berth_vmm::launch`). From then
//! on berth and the VMM share nothing but descriptors: the console, the agent channel, the
//! NIC's back end, and the report, which [`JailedVm::wait`] reads once the VMM is gone.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use berth_vmm::launch::{DiskFd, FileFd, Launch, NetFd, Report, ShareFd, LAUNCH_FD};

use super::{NetBackend, RunReport, VmConfig};

/// The program's file name, next to berth's.
pub const PROGRAM: &str = "berth-vmm";

/// Why a jailed VM could not start, or how it failed.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("{0}")]
    Program(String),
    #[error(transparent)]
    Vm(#[from] super::Error),
    #[error("opening the shared directory {}", path.display())]
    Share {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what}")]
    Setup {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("starting the VMM program {}", path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The VM could not boot or failed: the VMM's own words.
    #[error("{0}")]
    Failed(String),
    #[error("the VMM's {kind} thread made system call {syscall}{}, which its seccomp filter forbids, and the VMM was stopped: a bug in berth or an attack from the guest; report it with the guest and what it was doing", syscall_name(*syscall).map(|n| format!(" ({n})")).unwrap_or_default())]
    Seccomp { kind: String, syscall: i64 },
    #[error("the VMM ended without saying why ({status}); stderr above may tell more")]
    Lost { status: std::process::ExitStatus },
}

/// The names of the system calls a VMM thread is likeliest to be stopped for.
fn syscall_name(nr: i64) -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        use libc::*;
        let names: &[(c_long, &str)] = &[
            (SYS_socket, "socket"),
            (SYS_connect, "connect"),
            (SYS_execve, "execve"),
            (SYS_execveat, "execveat"),
            (SYS_open, "open"),
            (SYS_openat, "openat"),
            (SYS_ioctl, "ioctl"),
            (SYS_clone, "clone"),
            (SYS_clone3, "clone3"),
            (SYS_fork, "fork"),
            (SYS_mount, "mount"),
            (SYS_ptrace, "ptrace"),
            (SYS_kill, "kill"),
            (SYS_poll, "poll"),
            (SYS_ppoll, "ppoll"),
            (SYS_statx, "statx"),
        ];
        names.iter().find(|(n, _)| *n == nr).map(|(_, name)| *name)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = nr;
        None
    }
}

/// Where berth-vmm is: $BERTH_VMM, else next to the running berth.
pub fn program() -> Result<PathBuf, VmmError> {
    if let Some(p) = std::env::var_os("BERTH_VMM").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()
        .map_err(|e| VmmError::Program(format!("finding the berth binary: {e}")))?;
    let p = exe.with_file_name(PROGRAM);
    if p.is_file() {
        Ok(p)
    } else {
        Err(VmmError::Program(format!(
            "{} not found: install it next to {} (`cargo build` builds both; scripts/demo installs both)",
            p.display(),
            exe.display()
        )))
    }
}

/// The host ends a jailed VM gets.
pub struct JailedIo {
    /// The serial console's output.
    pub console: OwnedFd,
    /// A second copy of the console (BERTH_VM_DEBUG: berth's stderr).
    pub console_copy: Option<OwnedFd>,
    /// The guest agent's channel.
    pub channel: Option<UnixStream>,
    /// The NIC's back end, with the guest's MAC address.
    pub net: Option<(NetBackend, [u8; 6])>,
}

/// A running jailed VMM.
pub struct JailedVm {
    child: Child,
    report: File,
    pidfd: Arc<OwnedFd>,
}

/// Ends a jailed VMM from any thread, even once reaped (a pidfd names that process only).
#[derive(Clone)]
pub struct Stopper(Arc<OwnedFd>);

impl Stopper {
    /// Kills the VMM (the waiter; the VMM itself dies with it).
    pub fn kill(&self) {
        // SAFETY: pidfd_send_signal on a pidfd this process owns, no siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
}

/// The descriptors for the program, numbered from [`LAUNCH_FD`] in order.
#[derive(Default)]
struct Handover(Vec<OwnedFd>);

impl Handover {
    fn add(&mut self, fd: impl Into<OwnedFd>) -> RawFd {
        self.0.push(fd.into());
        LAUNCH_FD + self.0.len() as RawFd - 1
    }
}

fn setup(what: &'static str) -> impl FnOnce(io::Error) -> VmmError {
    move |source| VmmError::Setup { what, source }
}

/// Opens /dev/kvm and checks it as the VMM needs it.
#[cfg(target_arch = "x86_64")]
fn open_kvm() -> Result<OwnedFd, VmmError> {
    let kvm = super::vm::open_kvm().map_err(super::Error::from)?;
    // SAFETY: `kvm` owns the descriptor for the duration of the borrow.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(kvm.as_raw_fd()) };
    fd.try_clone_to_owned()
        .map_err(setup("duplicating the /dev/kvm descriptor"))
}

/// Opens a kernel or initrd; failing, says so as the VMM says what it cannot load.
#[cfg(target_arch = "x86_64")]
fn open_kernel(path: &PathBuf) -> Result<File, VmmError> {
    File::open(path).map_err(|e| {
        super::Error::Kernel {
            path: path.clone(),
            source: super::KernelError::Open(e),
        }
        .into()
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn open_kernel(_: &PathBuf) -> Result<File, VmmError> {
    Err(super::Error::UnsupportedArch.into())
}

#[cfg(not(target_arch = "x86_64"))]
fn open_kvm() -> Result<OwnedFd, VmmError> {
    Err(super::Error::UnsupportedArch.into())
}

/// Starts `config` in a jailed berth-vmm with `io` as its streams.
pub fn start(config: &VmConfig, io: JailedIo) -> Result<JailedVm, VmmError> {
    let program = program()?;
    if config.vcpus == 0 {
        return Err(super::Error::NoVcpus.into());
    }
    let mut fds = Handover::default();
    let (launch_read, launch_write) = pipe().map_err(setup("creating the launch pipe"))?;
    fds.add(launch_read);
    let (report_read, report_write) = pipe().map_err(setup("creating the report pipe"))?;
    let report = fds.add(report_write);
    let kvm = fds.add(open_kvm()?);
    let open = open_kernel;
    let kernel = FileFd {
        fd: fds.add(open(&config.kernel)?),
        path: config.kernel.clone(),
    };
    let initrd = match &config.initrd {
        Some(path) => Some(FileFd {
            fd: fds.add(open(path)?),
            path: path.clone(),
        }),
        None => None,
    };
    let mut disks = Vec::with_capacity(config.disks.len());
    for disk in &config.disks {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!disk.read_only)
            .open(&disk.path)
            .map_err(|source| super::Error::Disk {
                path: disk.path.clone(),
                source,
            })?;
        disks.push(DiskFd {
            fd: fds.add(file),
            read_only: disk.read_only,
        });
    }
    let mut shares = Vec::with_capacity(config.shares.len());
    for share in &config.shares {
        let dir = nix::fcntl::open(
            &share.path,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| VmmError::Share {
            path: share.path.clone(),
            source: e.into(),
        })?;
        // SAFETY: open returned a new descriptor, owned from here.
        let dir = unsafe { OwnedFd::from_raw_fd(dir) };
        shares.push(ShareFd {
            fd: fds.add(dir),
            tag: share.tag.clone(),
            read_only: share.read_only,
            guest_owner: share.guest_owner,
        });
    }
    let launch = Launch {
        kvm,
        kernel,
        initrd,
        cmdline: config.cmdline.clone(),
        vcpus: config.vcpus,
        mem_mib: config.mem_mib,
        disks,
        shares,
        balloon: config.balloon,
        console: fds.add(io.console),
        console_copy: io.console_copy.map(|fd| fds.add(fd)),
        channel: io.channel.map(|s| fds.add(s)),
        net: io.net.map(|(backend, mac)| NetFd {
            tap: matches!(backend, NetBackend::Tap(_)),
            fd: match backend {
                NetBackend::Stream(s) => fds.add(s),
                NetBackend::Tap(t) => fds.add(t),
            },
            mac,
        }),
        report,
    };

    let sources: Vec<RawFd> = fds.0.iter().map(|fd| fd.as_raw_fd()).collect();
    let mut moved = vec![-1; sources.len()];
    let above = sources
        .iter()
        .copied()
        .chain([LAUNCH_FD + sources.len() as RawFd])
        .max()
        .unwrap_or(LAUNCH_FD)
        + 1;
    let mut cmd = Command::new(&program);
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    // SAFETY: the closure runs between fork and exec and makes only async-signal-safe system
    // calls (fcntl, dup2, setpgid) on descriptors this process owns, without allocating.
    unsafe {
        cmd.pre_exec(move || {
            // Out of the way of the targets first, then each to its number (dup2 clears
            // close-on-exec on the copy).
            for (i, fd) in sources.iter().enumerate() {
                moved[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, above);
                if moved[i] < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (i, fd) in moved.iter().enumerate() {
                if libc::dup2(*fd, LAUNCH_FD + i as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // Out of the terminal's process group: ^C is berth's to forward to the guest.
            libc::setpgid(0, 0);
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| VmmError::Spawn {
        path: program.clone(),
        source,
    })?;
    drop(fds);
    // SAFETY: pidfd_open on this process's own, not yet reaped, child.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    let vm = JailedVm {
        child,
        report: File::from(report_read),
        pidfd: Arc::new(if pidfd < 0 {
            return Err(VmmError::Setup {
                what: "pidfd_open of the VMM",
                source: io::Error::last_os_error(),
            });
        } else {
            // SAFETY: pidfd_open returned a new descriptor.
            unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) }
        }),
    };
    // A VMM that is gone before reading it all leaves the rest unread: its report says why.
    let _ = File::from(launch_write).write_all(&launch.to_json());
    Ok(vm)
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

impl JailedVm {
    /// The program's first process (the waiter outside the VMM's PID namespace).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stopper(&self) -> Stopper {
        Stopper(self.pidfd.clone())
    }

    /// Waits for the VMM to end and says how the run went.
    pub fn wait(mut self) -> Result<RunReport, VmmError> {
        let mut text = String::new();
        // EOF once the VMM (the report's only writer) is gone.
        let _ = self.report.read_to_string(&mut text);
        let status = self
            .child
            .wait()
            .map_err(setup("waiting for the VMM program"))?;
        match Report::parse(&text) {
            Some(Report::Ended(report)) => Ok(report),
            Some(Report::Failed(text)) => Err(VmmError::Failed(text)),
            Some(Report::Seccomp { kind, syscall }) => Err(VmmError::Seccomp { kind, syscall }),
            None => Err(VmmError::Lost { status }),
        }
    }
}

impl Drop for JailedVm {
    fn drop(&mut self) {
        // Unwaited (berth gave up on the run): the VMM goes too.
        if self.child.try_wait().ok().flatten().is_none() {
            Stopper(self.pidfd.clone()).kill();
            let _ = self.child.wait();
        }
    }
}
