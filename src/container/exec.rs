//! `berth exec`: a new process in a running container (youki's "tenant"). It joins every
//! namespace of the container's first process (user first, mount last), gets a terminal of
//! the container's devpts with `-t`, resolves `-u` against the container's own /etc/passwd,
//! and becomes the process as the container's does (capabilities, no_new_privs, seccomp) —
//! through the same code (`process::become_process`).
//!
//! Processes: berth forks a joiner, which enters the namespaces and clones the process with
//! `CLONE_PARENT`, so that the process (in the container's pid namespace) is berth's own
//! child and berth relays its stdio, signals and exit status as for `run`. With `detach`
//! the process is the joiner's child instead, and lives on when both have gone.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxSeccomp, Process};

use super::dmz;
use super::idmap::IdMapping;
use super::process::{self, End, Started};
use super::pty;
use super::seccomp as bpf;
use super::userns::{self, child_exit, Forked};
use super::ContainerError;

/// A user and its groups, as the container's /etc files give them.
pub type ResolvedUser = (u32, u32, Vec<u32>);

/// Resolves `-u USER[:GROUP]` from the container's /etc/passwd and /etc/group (either may
/// be missing).
pub type UserResolver<'a> =
    &'a dyn Fn(&str, Option<&str>, Option<&str>) -> Result<ResolvedUser, String>;

/// A process to start in a running container.
pub struct ExecRequest<'a> {
    /// The container's first process, whose namespaces the new one joins.
    pub init: Pid,
    /// The process (args, env, cwd, user, capabilities, no_new_privs, terminal).
    pub process: Process,
    /// `-u`: resolved inside the container with `resolve_user`.
    pub user: Option<String>,
    pub resolve_user: UserResolver<'a>,
    /// The container's seccomp profile, and where compiled filters are cached.
    pub seccomp: Option<&'a LinuxSeccomp>,
    pub seccomp_cache: Option<PathBuf>,
    pub ids: &'a IdMapping,
    /// `-i`: berth's stdin goes to the process.
    pub attach_stdin: bool,
    /// `-d`: start it and return.
    pub detach: bool,
}

/// The namespaces to join, in the order setns needs: the user namespace first (it gives
/// the capabilities for the others), the mount namespace last (it changes the root).
const NAMESPACES: &[(&str, libc::c_int)] = &[
    ("user", libc::CLONE_NEWUSER),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("pid", libc::CLONE_NEWPID),
    ("mnt", libc::CLONE_NEWNS),
];

/// Opens the namespaces of `pid` that differ from ours (joining one's own fails).
fn open_namespaces(pid: Pid) -> Result<Vec<(OwnedFd, libc::c_int)>, ContainerError> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for (name, flag) in NAMESPACES {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let file = std::fs::File::open(&theirs).map_err(|e| {
            ContainerError::Setup(format!(
                "opening {theirs}: {e}; is the container still running? (`berth ps`)"
            ))
        })?;
        let ours = std::fs::metadata(format!("/proc/self/ns/{name}")).map(|m| m.ino());
        let same = file.metadata().map(|m| m.ino()).ok() == ours.ok();
        if !same {
            out.push((OwnedFd::from(file), *flag));
        }
    }
    Ok(out)
}

/// The container's /etc/NAME, read inside the container: a regular file of at most 4 MiB (a
/// container may point it at /dev/zero or a FIFO to stall or exhaust berth).
fn read_etc(name: &str) -> Option<String> {
    use std::os::unix::fs::OpenOptionsExt;
    const LIMIT: u64 = 4 << 20;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/etc/{name}"))
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(LIMIT).read_to_string(&mut text).ok()?;
    Some(text)
}

/// In the joiner, inside the container: the new process, or a message for berth.
fn enter(req: &ExecRequest, namespaces: &[(OwnedFd, libc::c_int)]) -> Result<(), String> {
    // Inside the container's namespaces this process and its child are still berth: not
    // dumpable, no process of the container can open their /proc/PID/exe or ptrace them.
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(format!(
            "making the process not dumpable: {}",
            std::io::Error::last_os_error()
        ));
    }
    for (fd, flag) in namespaces {
        // SAFETY: setns on a namespace descriptor we own, in a single-threaded child.
        if unsafe { libc::setns(fd.as_raw_fd(), *flag) } != 0 {
            return Err(format!(
                "joining the container's namespace ({flag:#x}): {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    // Joining a user namespace leaves the ids unmapped until set: become its root.
    if req.ids.uses_userns() {
        nix::unistd::setresgid(0.into(), 0.into(), 0.into())
            .map_err(|e| format!("setresgid(0) in the container: {e}"))?;
        nix::unistd::setresuid(0.into(), 0.into(), 0.into())
            .map_err(|e| format!("setresuid(0) in the container: {e}"))?;
    }
    Ok(())
}

/// Starts the process; with `detach` returns 0 once it runs, else relays it like `run` and
/// returns its exit status (128+N for signal N). Start failures carry Docker's codes
/// (`ContainerError::Start`: 126 cannot run, 127 not found). The caller must be
/// single-threaded.
pub fn exec(req: ExecRequest) -> Result<i32, ContainerError> {
    let namespaces = open_namespaces(req.init)?;
    let seccomp = match req.seccomp {
        Some(profile) => {
            let compiled = match &req.seccomp_cache {
                Some(dir) => bpf::compile_cached(profile, dir),
                None => bpf::compile(profile),
            };
            Some(compiled.map_err(|e| ContainerError::Spec(e.to_string()))?)
        }
        None => None,
    };
    let terminal = req.process.terminal().unwrap_or(false);
    let console = if terminal && !req.detach {
        Some(process::console_socket()?)
    } else {
        None
    };
    let size = pty::initial_size();
    let stdin_null = if req.attach_stdin && !req.detach {
        None
    } else {
        Some(OwnedFd::from(std::fs::File::open("/dev/null").map_err(
            |e| ContainerError::Setup(format!("opening /dev/null: {e}")),
        )?))
    };

    let sigs = process::forwarded_set();
    let mut old_mask = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&sigs), Some(&mut old_mask))
        .map_err(|e| ContainerError::Sys {
            what: "blocking signals",
            source: e,
        })?;
    let restore_mask = process::scopeguard(old_mask);
    let sfd = SignalFd::with_flags(&sigs, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).map_err(
        |e| ContainerError::Sys {
            what: "signalfd",
            source: e,
        },
    )?;
    let (pid_rd, pid_wr) = process::pipe()?;
    let (err_rd, err_wr) = process::pipe()?;

    let joiner = match userns::clone_fork(CloneFlags::empty())? {
        Forked::Parent(pid) => pid,
        Forked::Child => {
            drop((pid_rd, err_rd, sfd));
            if let Err(e) = enter(&req, &namespaces) {
                process::fail(&err_wr, 125, &e);
            }
            drop(namespaces);
            let flags = if req.detach {
                CloneFlags::empty()
            } else {
                CloneFlags::CLONE_PARENT
            };
            match userns::clone_fork(flags) {
                Ok(Forked::Parent(pid)) => {
                    let _ = nix::unistd::write(&pid_wr, format!("{pid}\n").as_bytes());
                    child_exit(0)
                }
                Ok(Forked::Child) => {
                    drop(pid_wr);
                    run_process(
                        &req,
                        console.as_ref().map(|(_, c)| c),
                        &size,
                        stdin_null,
                        seccomp,
                        old_mask,
                        err_wr,
                    )
                }
                Err(e) => process::fail(&err_wr, 125, &e.to_string()),
            }
        }
    };
    drop((pid_wr, err_wr, stdin_null));
    let console = console.map(|(ours, theirs)| {
        drop(theirs);
        ours
    });
    let mut pid_file = std::fs::File::from(pid_rd);
    let pid = process::read_line_unbuffered(&mut pid_file)
        .and_then(|l| l.trim().parse::<i32>().ok())
        .map(Pid::from_raw);
    let master = console.as_ref().and_then(|c| pty::recv_fd(c.as_fd()));
    drop(console);
    let mut err = String::new();
    let _ = std::fs::File::from(err_rd).read_to_string(&mut err);
    let _ = userns::wait_retry(joiner);
    let Some(pid) = pid.filter(|_| err.is_empty()) else {
        if let (Some(p), false) = (pid, req.detach) {
            let _ = userns::wait_retry(p);
        }
        return Err(process::start_error(&err));
    };
    if req.detach {
        return Ok(0);
    }
    let started = Started {
        init: pid,
        end: End::Child,
        master,
    };
    let code = process::relay(started, &sfd, req.attach_stdin)?;
    drop(restore_mask);
    Ok(code)
}

/// The new process, in the container: session, terminal or stdin, user, then the common
/// path to exec.
fn run_process(
    req: &ExecRequest,
    console: Option<&OwnedFd>,
    size: &nix::pty::Winsize,
    stdin_null: Option<OwnedFd>,
    seccomp: Option<bpf::SeccompFilters>,
    old_mask: SigSet,
    err: OwnedFd,
) -> ! {
    if !req.detach {
        userns::set_parent_death_signal();
    }
    if let Err(e) = nix::unistd::setsid() {
        process::fail(&err, 125, &format!("setsid: {e}"));
    }
    match console {
        Some(sock) => {
            let sent = pty::open_for_exec(size).and_then(|m| pty::send_fd(sock.as_fd(), m.as_fd()));
            if let Err(e) = sent {
                process::fail(&err, 125, &e);
            }
        }
        None => {
            if let Some(null) = &stdin_null {
                // SAFETY: dup2 onto stdin from a descriptor we own.
                unsafe { libc::dup2(null.as_raw_fd(), 0) };
            }
            if req.detach {
                for fd in [1, 2] {
                    if let Some(null) = &stdin_null {
                        // SAFETY: dup2 onto stdout/stderr from a descriptor we own.
                        unsafe { libc::dup2(null.as_raw_fd(), fd) };
                    }
                }
            }
        }
    }
    let mut process = req.process.clone();
    if let Some(spec) = &req.user {
        match (req.resolve_user)(
            spec,
            read_etc("passwd").as_deref(),
            read_etc("group").as_deref(),
        ) {
            Ok((uid, gid, groups)) => {
                let mut user = process.user().clone();
                user.set_uid(uid);
                user.set_gid(gid);
                user.set_additional_gids(Some(groups));
                process.set_user(user);
            }
            Err(e) => process::fail(&err, 125, &e),
        }
    }
    process::become_process(
        &process,
        req.ids,
        seccomp.as_ref(),
        old_mask,
        err,
        !req.detach,
        dmz::Mode::Exec,
    )
}
