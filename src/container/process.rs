//! Running a bundle. Three processes, each with one job:
//! - the parent (`berth run`): writes the id maps, relays signals, the pty and the exit status;
//! - stage 1, in the new user and mount namespaces: mounts the rootfs (running fuse-overlayfs
//!   if asked, outside the container's pid namespace), unshares the rest, waits for stage 2,
//!   then unmounts and cleans up;
//! - stage 2, PID 1 of the new pid namespace: mounts, pivot_root, identity, caps, seccomp, then
//!   exec of the sealed in-container helper (`dmz`), which execs the command (or, with
//!   `--init`, stays as its init).

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Pid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};

use super::dmz;
use super::idmap::{IdMapping, IdMode};
use super::mounts;
use super::pty::{self, RawMode};
use super::seccomp as bpf;
use super::userns::{self, child_exit, Forked};
use super::{ContainerError, NetworkAttach};

/// The annotation that asks for berth's reaper as PID 1 (`--init`).
pub const INIT_ANNOTATION: &str = "dev.berth.init";

/// What the caller wants beyond the spec: how the caller's stdin is wired and what to delete
/// (inside the user namespace, where the files' owners map) once the container has exited.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    pub attach_stdin: bool,
    pub remove_after: Vec<PathBuf>,
    /// Where compiled seccomp filters are kept between runs.
    pub seccomp_cache: Option<PathBuf>,
    /// Stage 1 hands the container over to the caller and exits once the command runs: the
    /// container's first process becomes the caller's child, whose wait status is the
    /// container's (a monitor then costs one process per container, not two). Not with
    /// fuse-overlayfs, whose daemon lives as long as stage 1; nor with `remove_after`.
    pub hand_over: bool,
}

/// Signals `berth run` passes on to the container process.
const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGCONT,
];

pub(super) fn forwarded_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGWINCH);
    set
}

pub(super) fn pipe() -> Result<(OwnedFd, OwnedFd), ContainerError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ContainerError::Sys {
        what: "creating a pipe",
        source: e,
    })
}

/// Loads the bundle's config.json.
pub fn load_spec(bundle: &Path) -> Result<Spec, ContainerError> {
    let path = bundle.join("config.json");
    Spec::load(&path).map_err(|e| ContainerError::Spec(format!("{}: {e}", path.display())))
}

/// The rootfs path of a bundle (relative paths are relative to the bundle).
pub fn rootfs_path(bundle: &Path, spec: &Spec) -> PathBuf {
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| "rootfs".into());
    bundle.join(root)
}

fn has_ns(spec: &Spec, typ: LinuxNamespaceType) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == typ && n.path().is_none()))
}

/// A namespace the spec asks to join (an entry with a path).
fn joined_ns(spec: &Spec, typ: LinuxNamespaceType) -> Option<PathBuf> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|ns| ns.iter().find(|n| n.typ() == typ))
        .and_then(|n| n.path().clone())
}

/// A container whose process runs: what its supervisor needs.
#[derive(Debug)]
pub struct Started {
    /// The container's first process (PID 1 of its pid namespace), as the host sees it.
    pub init: Pid,
    /// How the container's end is learnt.
    pub end: End,
    /// With a terminal (`process.terminal`): its master.
    pub master: Option<OwnedFd>,
}

/// Who reports a started container's end.
#[derive(Debug)]
pub enum End {
    /// Stage 1, the caller's child, waits for the container and writes `exit N` or
    /// `signal N` on `status` (the pid line already read), then exits.
    Stage1 { stage1: Pid, status: OwnedFd },
    /// The container's first process is the caller's child (`RunOptions::hand_over`): its
    /// wait status is the container's.
    Child,
}

/// Runs the bundle in the foreground and returns the container's exit status
/// (128+N when the process was killed by signal N). With `network`, the container's new
/// network namespace is handed to it once it exists, and the process starts only after it
/// has connected the namespace. `on_start` learns the container's processes once its
/// command runs.
pub fn run(
    bundle: &Path,
    ids: &IdMapping,
    opts: &RunOptions,
    network: Option<&mut dyn NetworkAttach>,
    on_start: impl FnOnce(&Started),
) -> Result<i32, ContainerError> {
    let sigs = forwarded_set();
    let mut old_mask = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&sigs), Some(&mut old_mask))
        .map_err(|e| ContainerError::Sys {
            what: "blocking signals",
            source: e,
        })?;
    let restore_mask = scopeguard(old_mask);
    let sfd = SignalFd::with_flags(&sigs, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).map_err(
        |e| ContainerError::Sys {
            what: "signalfd",
            source: e,
        },
    )?;
    let started = start_with_mask(bundle, ids, opts, old_mask, &[sfd.as_raw_fd()], network)?;
    on_start(&started);
    let result = relay(started, &sfd, opts.attach_stdin);
    drop(restore_mask);
    result
}

/// Starts the bundle's container as the caller's child and returns once its command runs
/// (or failed to start: then with Docker's code in `ContainerError::Start`). The container's
/// stdio is the caller's descriptors 0, 1 and 2 (stdin /dev/null unless `attach_stdin`), or
/// a new terminal when the spec asks for one. The stages close `close_in_child` at once (the
/// caller's locks and pipes that must not live as long as the container). With `network`,
/// the container's new network namespace is connected before its command runs. The caller
/// must be single-threaded.
pub fn start(
    bundle: &Path,
    ids: &IdMapping,
    opts: &RunOptions,
    close_in_child: &[RawFd],
    network: Option<&mut dyn NetworkAttach>,
) -> Result<Started, ContainerError> {
    let mut mask = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, None, Some(&mut mask)).map_err(
        |e| ContainerError::Sys {
            what: "reading the signal mask",
            source: e,
        },
    )?;
    start_with_mask(bundle, ids, opts, mask, close_in_child, network)
}

/// [`start`], with the signal mask the container's process gets and descriptors the stages
/// close at once.
fn start_with_mask(
    bundle: &Path,
    ids: &IdMapping,
    opts: &RunOptions,
    old_mask: SigSet,
    close_in_child: &[RawFd],
    network: Option<&mut dyn NetworkAttach>,
) -> Result<Started, ContainerError> {
    let spec = load_spec(bundle)?;
    // A user namespace to join (a user-defined network's) instead of a new one.
    let join_userns = match joined_ns(&spec, LinuxNamespaceType::User) {
        Some(p) => Some(OwnedFd::from(std::fs::File::open(&p).map_err(|e| {
            ContainerError::Setup(format!("opening the user namespace {}: {e}", p.display()))
        })?)),
        None => None,
    };
    let network = network.filter(|_| has_ns(&spec, LinuxNamespaceType::Network));
    let net_ready = match network {
        Some(_) => Some(pipe()?),
        None => None,
    };
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| ContainerError::Spec("config.json has no process".into()))?;
    let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(profile) => {
            let compiled = match &opts.seccomp_cache {
                Some(dir) => bpf::compile_cached(profile, dir),
                None => bpf::compile(profile),
            };
            Some(compiled.map_err(|e| ContainerError::Spec(e.to_string()))?)
        }
        None => None,
    };
    let terminal = process.terminal().unwrap_or(false);
    let console = if terminal {
        let (parent, child) = console_socket()?;
        Some((parent, child, pty::initial_size()))
    } else {
        None
    };
    let stdin_null = if opts.attach_stdin {
        None
    } else {
        Some(OwnedFd::from(std::fs::File::open("/dev/null").map_err(
            |e| ContainerError::Setup(format!("opening /dev/null: {e}")),
        )?))
    };

    let (sync_rd, sync_wr) = pipe()?;
    let (status_rd, status_wr) = pipe()?;
    let (err_rd, err_wr) = pipe()?;

    let flags = if join_userns.is_some() {
        // The mount namespace is made after joining, so that the joined namespace owns it.
        CloneFlags::empty()
    } else {
        userns::userns_flag(ids) | CloneFlags::CLONE_NEWNS
    };
    let (net_rd, net_wr) = match net_ready {
        Some((r, w)) => (Some(r), Some(w)),
        None => (None, None),
    };
    match userns::clone_fork(flags)? {
        Forked::Child => {
            drop(sync_wr);
            drop(status_rd);
            drop(err_rd);
            for fd in close_in_child {
                let _ = nix::unistd::close(*fd);
            }
            drop(net_wr);
            if let Some(fd) = &join_userns {
                if let Err(e) = join_user_namespace(fd) {
                    let _ = write_all_fd(err_wr.as_raw_fd(), format!("125:{e}").as_bytes());
                    child_exit(125);
                }
            }
            let ctx = Stage {
                spec: &spec,
                bundle,
                ids,
                opts,
                console: console.as_ref().map(|(_, c, size)| (c, *size)),
                stdin_null,
                old_mask,
                seccomp,
                net_ready: net_rd,
            };
            stage1(ctx, sync_rd, status_wr, err_wr)
        }
        Forked::Parent(stage1_pid) => {
            drop(sync_rd);
            drop(status_wr);
            drop(err_wr);
            drop(stdin_null);
            drop(net_rd);
            let console = console.map(|(parent, child, _)| {
                drop(child);
                parent
            });
            let maps = if join_userns.is_some() {
                None
            } else {
                Some(ids)
            };
            let net = network.zip(net_wr);
            let handed_over = opts.hand_over && hands_over(&spec, opts);
            handshake(
                stage1_pid,
                maps,
                sync_wr,
                status_rd,
                err_rd,
                console,
                handed_over,
                net,
            )
        }
    }
}

/// Whether stage 1 can hand the container over (see `RunOptions::hand_over`).
fn hands_over(spec: &Spec, opts: &RunOptions) -> bool {
    opts.hand_over
        && opts.remove_after.is_empty()
        && root_mount(spec).and_then(|m| m.typ().as_deref()) != Some("fuse-overlayfs")
}

/// The socket over which a container's terminal master comes back.
pub(crate) fn console_socket() -> Result<(OwnedFd, OwnedFd), ContainerError> {
    nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| ContainerError::Sys {
        what: "creating the console socket",
        source: e,
    })
}

/// Restores the signal mask when dropped.
pub(super) struct MaskGuard(SigSet);
pub(super) fn scopeguard(old: SigSet) -> MaskGuard {
    MaskGuard(old)
}
impl Drop for MaskGuard {
    fn drop(&mut self) {
        // Drain what arrived for the container while we were relaying, then unblock.
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.0), None);
    }
}

/// Joins the user namespace `fd` and makes a mount namespace owned by it.
fn join_user_namespace(fd: &OwnedFd) -> Result<(), String> {
    // SAFETY: setns on a namespace descriptor we own, in a single-threaded child.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWUSER) } != 0 {
        return Err(format!(
            "joining the network's user namespace: {}",
            std::io::Error::last_os_error()
        ));
    }
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("creating a mount namespace: {e}"))
}

/// Parent side of a start: writes the id maps (unless the container joins a user namespace),
/// learns the container's pid, connects its network, takes the terminal master, and waits
/// until the command runs or its start failed.
#[allow(clippy::too_many_arguments)]
fn handshake(
    stage1: Pid,
    maps: Option<&IdMapping>,
    sync_wr: OwnedFd,
    status_rd: OwnedFd,
    err_rd: OwnedFd,
    console: Option<OwnedFd>,
    handed_over: bool,
    net: Option<(&mut dyn NetworkAttach, OwnedFd)>,
) -> Result<Started, ContainerError> {
    match maps {
        Some(ids) => userns::parent_write_maps(stage1, ids, sync_wr)?,
        None => {
            let mut f = std::fs::File::from(sync_wr);
            f.write_all(b"1").map_err(userns::UsernsError::from)?;
        }
    }
    let mut status = std::fs::File::from(status_rd);
    // First line: the container's pid, or EOF when stage 1 failed. Read byte by byte: what
    // follows (the exit line) is for whoever supervises the container.
    let container = loop {
        match read_line_unbuffered(&mut status) {
            Some(l) if l.starts_with("pid ") => {
                break l[4..].trim().parse::<i32>().ok().map(Pid::from_raw);
            }
            Some(_) => continue,
            None => break None,
        }
    };
    // The network namespace exists (stage 1 made it before forking the container): connect
    // it while the container finishes its mounts; the container waits for the word to exec.
    // Named by stage 1, which lives as long as the container, or, when stage 1 hands the
    // container over (and exits at once), by the container's first process, which waits.
    if let (Some(container), Some((hook, ready))) = (container, net) {
        let target = if handed_over { container } else { stage1 };
        if let Err(e) = hook.attach(target.as_raw()) {
            drop(ready);
            let _ = kill(container, Signal::SIGKILL);
            let _ = userns::wait_retry(stage1);
            if handed_over {
                // The container process is ours to reap.
                let _ = userns::wait_retry(container);
            }
            return Err(ContainerError::Setup(e));
        }
        let _ = write_all_fd(ready.as_raw_fd(), b"1");
    }
    // With -t the container sends the master of its pty before it execs.
    let master = console.as_ref().and_then(|c| pty::recv_fd(c.as_fd()));
    drop(console);
    let mut err = String::new();
    let _ = std::fs::File::from(err_rd).read_to_string(&mut err);
    if !err.is_empty() || container.is_none() {
        let _ = userns::wait_retry(stage1);
        if handed_over {
            // The failed container process is ours to reap.
            if let Some(c) = container {
                let _ = userns::wait_retry(c);
            }
        }
        return Err(start_error(&err));
    }
    let init = container.expect("checked above");
    let end = if handed_over {
        // Stage 1 has handed the container over and exits.
        let _ = userns::wait_retry(stage1);
        End::Child
    } else {
        End::Stage1 {
            stage1,
            status: OwnedFd::from(status),
        }
    };
    Ok(Started { init, end, master })
}

/// Reads one line without reading past it.
pub(super) fn read_line_unbuffered(f: &mut std::fs::File) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match f.read(&mut byte) {
            Ok(0) => return None,
            Ok(_) if byte[0] == b'\n' => return Some(String::from_utf8_lossy(&line).into_owned()),
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
}

/// The foreground supervision of a started container: relays signals, the terminal and
/// stdin, and returns the exit status once the container has ended.
pub(super) fn relay(
    started: Started,
    sfd: &SignalFd,
    attach_stdin: bool,
) -> Result<i32, ContainerError> {
    let Started {
        init: container,
        end,
        master,
    } = started;
    // Stage 1 reports the end on its pipe, or the process is our child (exec).
    let (stage1, mut status) = match end {
        End::Stage1 { stage1, status } => (Some(stage1), Some(std::fs::File::from(status))),
        End::Child => (None, None),
    };
    let mut lines = LineReader::default();
    let _raw = match (&master, attach_stdin) {
        (Some(_), true) => Some(RawMode::enter()),
        _ => None,
    };
    let stdin = std::io::stdin();
    let mut stdin_open = master.is_some() && attach_stdin;
    let mut master_open = master.is_some();
    let mut exit: Option<i32> = None;
    let mut buf = [0u8; 8192];
    while exit.is_none() || master_open {
        let mut fds = vec![
            libc::pollfd {
                fd: sfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: status.as_ref().map_or(-1, |s| s.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let stdin_idx = stdin_open.then(|| {
            fds.push(libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            });
            fds.len() - 1
        });
        let master_idx = master.as_ref().filter(|_| master_open).map(|m| {
            fds.push(libc::pollfd {
                fd: m.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            fds.len() - 1
        });
        if exit.is_some() {
            // The container is gone; only drain what is left in the pty.
            fds[0].fd = -1;
            fds[1].fd = -1;
        }
        // SAFETY: fds is a valid, initialised array of pollfd for the duration of the call.
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                if exit.is_some() { 100 } else { -1 },
            )
        };
        if n < 0 {
            if nix::Error::last() == nix::Error::EINTR {
                continue;
            }
            break;
        }
        if n == 0 && exit.is_some() {
            break;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            while let Ok(Some(si)) = sfd.read_signal() {
                let Ok(sig) = Signal::try_from(si.ssi_signo as i32) else {
                    continue;
                };
                match sig {
                    Signal::SIGCHLD if stage1.is_none() => {
                        match waitpid(container, Some(WaitPidFlag::WNOHANG)) {
                            Ok(WaitStatus::Exited(_, code)) => exit = Some(code),
                            Ok(WaitStatus::Signaled(_, sig, _)) => exit = Some(128 + sig as i32),
                            _ => {}
                        }
                    }
                    Signal::SIGCHLD => {}
                    Signal::SIGWINCH => {
                        if let Some(m) = &master {
                            pty::copy_window_size(stdin.as_fd(), m.as_fd());
                        }
                    }
                    other => {
                        let _ = kill(container, other);
                    }
                }
            }
        }
        if let (true, Some(status)) = (fds[1].revents != 0, &mut status) {
            match lines.next_line(status) {
                Some(l) => exit = parse_exit(&l),
                None => {
                    // Stage 1 died without reporting (killed): the container is gone with it.
                    exit = Some(exit.unwrap_or(137));
                }
            }
        }
        if let (Some(i), Some(m)) = (stdin_idx, &master) {
            if fds[i].revents != 0 {
                match nix::unistd::read(0, &mut buf) {
                    Ok(0) | Err(_) => {
                        stdin_open = false;
                        let _ = nix::unistd::write(m, &[4u8]);
                    }
                    Ok(k) => {
                        let _ = write_all_fd(m.as_raw_fd(), &buf[..k]);
                    }
                }
            }
        }
        if let (Some(i), Some(m)) = (master_idx, &master) {
            if fds[i].revents != 0 {
                match nix::unistd::read(m.as_raw_fd(), &mut buf) {
                    Ok(0) | Err(_) => master_open = false,
                    Ok(k) => {
                        let _ = std::io::stdout().write_all(&buf[..k]);
                        let _ = std::io::stdout().flush();
                    }
                }
            }
        }
    }
    if let Some(stage1) = stage1 {
        let _ = userns::wait_retry(stage1);
    }
    Ok(exit.unwrap_or(137))
}

fn write_all_fd(fd: RawFd, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        // SAFETY: fd stays open for the duration of the call; we only borrow it.
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        match nix::unistd::write(b, data) {
            Ok(n) => data = &data[n..],
            Err(nix::Error::EINTR) | Err(nix::Error::EAGAIN) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn parse_exit(line: &str) -> Option<i32> {
    let (kind, n) = line.trim().split_once(' ')?;
    let n: i32 = n.parse().ok()?;
    match kind {
        "exit" => Some(n),
        "signal" => Some(128 + n),
        _ => None,
    }
}

/// Parses "CODE:message" written by a failing stage into an error.
pub(super) fn start_error(raw: &str) -> ContainerError {
    match raw.split_once(':') {
        Some((code, msg)) if code.parse::<i32>().is_ok() => ContainerError::Start {
            code: code.parse().unwrap_or(126),
            message: msg.trim().to_string(),
        },
        _ if raw.is_empty() => ContainerError::Start {
            code: 125,
            message: "the container's set-up process ended without a word".into(),
        },
        _ => ContainerError::Start {
            code: 125,
            message: raw.trim().to_string(),
        },
    }
}

/// Reads newline-terminated lines from a pipe, one at a time, without over-reading.
#[derive(Default)]
struct LineReader {
    buf: Vec<u8>,
}

impl LineReader {
    fn next_line(&mut self, f: &mut std::fs::File) -> Option<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(String::from_utf8_lossy(&line).trim_end().to_string());
            }
            let mut chunk = [0u8; 256];
            match f.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
        }
    }
}

/// Everything the stages need, borrowed from the parent's memory (a copy after clone).
struct Stage<'a> {
    spec: &'a Spec,
    bundle: &'a Path,
    ids: &'a IdMapping,
    opts: &'a RunOptions,
    /// With -t: our end of the console socket and the initial window size.
    console: Option<(&'a OwnedFd, nix::pty::Winsize)>,
    stdin_null: Option<OwnedFd>,
    old_mask: SigSet,
    seccomp: Option<bpf::SeccompFilters>,
    /// With a network to connect: the word from the parent that it is connected.
    net_ready: Option<OwnedFd>,
}

/// Reports a failure to the parent as "CODE:message" and exits.
pub(super) fn fail(err: &OwnedFd, code: i32, msg: &str) -> ! {
    let _ = write_all_fd(err.as_raw_fd(), format!("{code}:{msg}").as_bytes());
    child_exit(code)
}

fn stage1(ctx: Stage, sync_rd: OwnedFd, status_wr: OwnedFd, err_wr: OwnedFd) -> ! {
    userns::set_parent_death_signal();
    if let Err(e) = userns::child_wait_for_maps(sync_rd, ctx.ids) {
        fail(&err_wr, 125, &e);
    }
    if let Err(e) = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    ) {
        fail(&err_wr, 125, &format!("making / a slave mount: {e}"));
    }
    let rootfs = rootfs_path(ctx.bundle, ctx.spec);
    let mut fuse = match mount_rootfs(ctx.spec, &rootfs) {
        Ok(f) => f,
        Err(e) => fail(&err_wr, 125, &e),
    };
    let mut flags = CloneFlags::empty();
    for (t, f) in [
        (LinuxNamespaceType::Pid, CloneFlags::CLONE_NEWPID),
        (LinuxNamespaceType::Uts, CloneFlags::CLONE_NEWUTS),
        (LinuxNamespaceType::Ipc, CloneFlags::CLONE_NEWIPC),
        (LinuxNamespaceType::Cgroup, CloneFlags::CLONE_NEWCGROUP),
        (LinuxNamespaceType::Network, CloneFlags::CLONE_NEWNET),
    ] {
        if has_ns(ctx.spec, t) {
            flags |= f;
        }
    }
    if let Err(e) = unshare(flags) {
        stop_fuse(&rootfs, &mut fuse);
        fail(&err_wr, 125, &format!("creating namespaces {flags:?}: {e}"));
    }
    let new_net = flags.contains(CloneFlags::CLONE_NEWNET);
    // Handing over: the container's first process is created as the caller's child.
    let hand_over = fuse.is_none() && hands_over(ctx.spec, ctx.opts);
    let clone_flags = if hand_over {
        CloneFlags::CLONE_PARENT
    } else {
        CloneFlags::empty()
    };
    let pid = match userns::clone_fork(clone_flags) {
        Ok(Forked::Child) => {
            drop(status_wr);
            stage2(ctx, &rootfs, new_net, err_wr)
        }
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => {
            stop_fuse(&rootfs, &mut fuse);
            fail(&err_wr, 125, &e.to_string())
        }
    };
    drop(err_wr);
    let _ = write_all_fd(status_wr.as_raw_fd(), format!("pid {pid}\n").as_bytes());
    if hand_over {
        child_exit(0)
    }
    let line = match userns::wait_retry(pid) {
        Ok(WaitStatus::Exited(_, code)) => format!("exit {code}\n"),
        Ok(WaitStatus::Signaled(_, sig, _)) => format!("signal {}\n", sig as i32),
        _ => "exit 125\n".to_string(),
    };
    stop_fuse(&rootfs, &mut fuse);
    for p in &ctx.opts.remove_after {
        let _ = std::fs::remove_dir_all(p);
    }
    let _ = write_all_fd(status_wr.as_raw_fd(), line.as_bytes());
    child_exit(0)
}

/// Mounts the spec's root entry (a mount with destination "/") at `rootfs`; returns the
/// fuse-overlayfs process when that driver is used.
pub(super) fn mount_rootfs(spec: &Spec, rootfs: &Path) -> Result<Option<Child>, String> {
    let Some(m) = root_mount(spec) else {
        // A ready directory: make it a mount point so pivot_root accepts it.
        mount(
            Some(rootfs),
            rootfs,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| format!("binding the rootfs {}: {e}", rootfs.display()))?;
        return Ok(None);
    };
    let typ = m.typ().as_deref().unwrap_or("bind");
    let options = m.options().clone().unwrap_or_default();
    match typ {
        "fuse-overlayfs" => {
            let mut child = Command::new("fuse-overlayfs")
                .arg("-f")
                .arg("-o")
                .arg(options.join(","))
                .arg(rootfs)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .spawn_with_death_signal()
                .map_err(|e| format!("starting fuse-overlayfs: {e}; install it with `apt-get install fuse-overlayfs`"))?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while !mounts::is_mountpoint(rootfs) {
                if let Ok(Some(st)) = child.try_wait() {
                    return Err(format!("fuse-overlayfs exited ({st}) before mounting; is /dev/fuse usable? (`berth doctor`)"));
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    return Err("fuse-overlayfs did not mount within 10 s".into());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(Some(child))
        }
        "bind" => {
            let src = m.source().clone().unwrap_or_default();
            mount(
                Some(&src),
                rootfs,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| format!("binding the rootfs {}: {e}", src.display()))?;
            Ok(None)
        }
        fs => {
            let data = options.join(",");
            mount(Some(fs), rootfs, Some(fs), MsFlags::empty(), Some(data.as_str())).map_err(|e| {
                format!("mounting the {fs} rootfs: {e}; try `--storage-driver fuse-overlayfs` or see `berth doctor`")
            })?;
            Ok(None)
        }
    }
}

trait SpawnDeath {
    fn spawn_with_death_signal(&mut self) -> std::io::Result<Child>;
}

impl SpawnDeath for Command {
    fn spawn_with_death_signal(&mut self) -> std::io::Result<Child> {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure only calls prctl, which is async-signal-safe.
        unsafe {
            self.pre_exec(|| {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                Ok(())
            })
        }
        .spawn()
    }
}

pub(super) fn stop_fuse(rootfs: &Path, fuse: &mut Option<Child>) {
    let _ = umount2(rootfs, MntFlags::MNT_DETACH);
    if let Some(mut child) = fuse.take() {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The spec's root entry, if any: a mount whose destination is "/".
pub fn root_mount(spec: &Spec) -> Option<&Mount> {
    spec.mounts()
        .as_ref()?
        .iter()
        .find(|m| m.destination() == Path::new("/"))
}

fn stage2(ctx: Stage, rootfs: &Path, new_net: bool, err: OwnedFd) -> ! {
    userns::set_parent_death_signal();
    // A mount namespace of its own: pivot_root then moves only the container, not the
    // fuse-overlayfs daemon, which must keep seeing the host's paths to its layers; and
    // stage 1 can still unmount the rootfs in its namespace to end that daemon.
    if let Err(e) = unshare(CloneFlags::CLONE_NEWNS) {
        fail(
            &err,
            125,
            &format!("creating the container's mount namespace: {e}"),
        );
    }
    if let Err(e) = setup_container(&ctx, rootfs, new_net) {
        fail(&err, 125, &e);
    }
    if let Some(ready) = &ctx.net_ready {
        let mut byte = [0u8; 1];
        let ok = nix::unistd::read(ready.as_raw_fd(), &mut byte).is_ok_and(|n| n == 1);
        if !ok {
            fail(&err, 125, "the container's network could not be set up");
        }
    }
    let init = ctx
        .spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(INIT_ANNOTATION))
        .is_some_and(|v| v == "true");
    exec_process(
        ctx,
        err,
        if init {
            dmz::Mode::Init
        } else {
            dmz::Mode::Exec
        },
    )
}

fn setup_container(ctx: &Stage, rootfs: &Path, new_net: bool) -> Result<(), String> {
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    if ctx.console.is_none() {
        if let Some(null) = &ctx.stdin_null {
            dup_to(null.as_raw_fd(), 0)?;
        }
    }
    if new_net {
        loopback_up()?;
    }
    let spec = ctx.spec;
    for m in spec.mounts().as_deref().unwrap_or(&[]) {
        if m.destination() == Path::new("/") {
            continue;
        }
        mounts::mount_entry(rootfs, m)?;
    }
    let linux = spec.linux().clone().unwrap_or_default();
    mounts::bind_devices(rootfs, linux.devices().as_deref().unwrap_or(&[]))?;
    // Paths of the image, resolved inside it: an image's /dev or working directory that is
    // a symlink (or one swapped in by a container sharing a volume) never reaches the host.
    let root = crate::inroot::open_root(rootfs)
        .map_err(|e| format!("opening the rootfs {}: {e}", rootfs.display()))?;
    let dev = crate::inroot::open_in_root(
        root.as_fd(),
        Path::new("/dev"),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
    );
    if dev.is_ok() {
        mounts::dev_symlinks(rootfs)?;
    }
    let process = spec.process().as_ref().ok_or("no process in spec")?;
    // Docker creates a missing working directory.
    let _ = crate::inroot::create_dirs_in_root(root.as_fd(), process.cwd(), 0o755);
    drop((dev, root));
    mounts::pivot_into(rootfs)?;
    if let Some((sock, size)) = &ctx.console {
        let master = pty::open_in_container(size)?;
        pty::send_fd(sock.as_fd(), master.as_fd())?;
    }
    mounts::mask_paths(linux.masked_paths().as_deref().unwrap_or(&[]))?;
    mounts::readonly_paths(linux.readonly_paths().as_deref().unwrap_or(&[]))?;
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| format!("making the root read-only: {e}"))?;
    }
    if let Some(h) = spec.hostname() {
        nix::unistd::sethostname(h).map_err(|e| format!("sethostname: {e}"))?;
    }
    for rl in process.rlimits().as_deref().unwrap_or(&[]) {
        let res = rlimit_resource(&format!("{:?}", rl.typ()));
        if let Some(res) = res {
            let lim = libc::rlimit {
                rlim_cur: rl.soft(),
                rlim_max: rl.hard(),
            };
            // SAFETY: setrlimit reads one rlimit struct from a valid pointer.
            if unsafe { libc::setrlimit(res, &lim) } != 0 {
                return Err(format!("setrlimit {:?}: {}", rl.typ(), nix::Error::last()));
            }
        }
    }
    Ok(())
}

fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name.trim_start_matches("Rlimit") {
        "Nofile" => libc::RLIMIT_NOFILE,
        "Nproc" => libc::RLIMIT_NPROC,
        "Core" => libc::RLIMIT_CORE,
        "Stack" => libc::RLIMIT_STACK,
        "Memlock" => libc::RLIMIT_MEMLOCK,
        "Fsize" => libc::RLIMIT_FSIZE,
        "Cpu" => libc::RLIMIT_CPU,
        "As" => libc::RLIMIT_AS,
        "Data" => libc::RLIMIT_DATA,
        "Msgqueue" => libc::RLIMIT_MSGQUEUE,
        "Nice" => libc::RLIMIT_NICE,
        "Rtprio" => libc::RLIMIT_RTPRIO,
        "Sigpending" => libc::RLIMIT_SIGPENDING,
        "Locks" => libc::RLIMIT_LOCKS,
        "Rss" => libc::RLIMIT_RSS,
        "Rttime" => libc::RLIMIT_RTTIME,
        _ => return None,
    })
}

fn dup_to(fd: RawFd, target: RawFd) -> Result<(), String> {
    // SAFETY: dup2 on fds we own; the target is one of the standard descriptors.
    if unsafe { libc::dup2(fd, target) } < 0 {
        return Err(format!("dup2: {}", nix::Error::last()));
    }
    Ok(())
}

/// Brings up `lo` in a fresh network namespace.
fn loopback_up() -> Result<(), String> {
    // SAFETY: socket() with constant arguments; the fd is wrapped right away.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(format!("socket: {}", nix::Error::last()));
    }
    // SAFETY: sock is a fresh, owned descriptor.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(format!("reading lo flags: {}", nix::Error::last()));
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(format!("bringing up lo: {}", nix::Error::last()));
        }
    }
    Ok(())
}

fn exec_process(ctx: Stage, err: OwnedFd, mode: dmz::Mode) -> ! {
    let process = ctx.spec.process().as_ref().expect("checked by run()");
    become_process(
        process,
        ctx.ids,
        ctx.seccomp.as_ref(),
        ctx.old_mask,
        err,
        true,
        mode,
    )
}

/// Becomes the spec's `process`: identity (capabilities, no_new_privs, user), working
/// directory, seccomp filter, default signal handling, then exec through the sealed helper
/// (`dmz`, which with [`dmz::Mode::Init`] stays as the command's init); reports a failure on
/// `err` with Docker's code. Shared by a container's first process and `berth exec`.
///
/// berth's own binary is never executed here, and nothing of the caller's reaches the
/// container: every descriptor but stdio is closed before the working directory is chosen,
/// and the process is not dumpable, so that no process of the container can open its
/// /proc/PID/exe (berth's binary) or ptrace it before the exec.
pub(super) fn become_process(
    process: &oci_spec::runtime::Process,
    ids: &IdMapping,
    seccomp: Option<&bpf::SeccompFilters>,
    old_mask: SigSet,
    err: OwnedFd,
    death_signal: bool,
    mode: dmz::Mode,
) -> ! {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        fail(
            &err,
            125,
            &format!("making the process not dumpable: {}", nix::Error::last()),
        );
    }
    let helper = match dmz::sealed() {
        Ok(fd) => fd,
        Err(e) => fail(&err, 125, &e),
    };
    if let Err(e) = dmz::close_inherited(&[err.as_raw_fd(), helper.as_raw_fd()]) {
        fail(&err, 125, &e);
    }
    if let Err(e) = set_identity(process, ids) {
        fail(&err, 125, &e);
    }
    if let Err(e) = nix::unistd::chdir(process.cwd()) {
        fail(
            &err,
            125,
            &format!(
                "cannot enter the working directory {}: {e}",
                process.cwd().display()
            ),
        );
    }
    if death_signal {
        userns::set_parent_death_signal();
    }
    if let Some(f) = seccomp {
        if let Err(e) = f.install() {
            fail(&err, 125, &format!("installing the seccomp filter: {e}"));
        }
    }
    // Signals: default dispositions and the mask berth had before it blocked them.
    for s in Signal::iterator() {
        if s != Signal::SIGKILL && s != Signal::SIGSTOP {
            // SAFETY: resetting a disposition to SIG_DFL installs no handler code.
            let _ = unsafe { nix::sys::signal::signal(s, nix::sys::signal::SigHandler::SigDfl) };
        }
    }
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);

    let args: Vec<CString> = process
        .args()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .filter_map(|a| CString::new(a.as_bytes()).ok())
        .collect();
    let env: Vec<String> = process.env().clone().unwrap_or_default();
    let envc: Vec<CString> = env
        .iter()
        .filter_map(|e| CString::new(e.as_bytes()).ok())
        .collect();
    let Some(arg0) = args.first() else {
        fail(
            &err,
            125,
            "no command: give one after the image name, or set Cmd/Entrypoint in the image",
        );
    };
    let e = dmz::exec(&helper, mode, err.as_raw_fd(), &args, &envc);
    fail(
        &err,
        125,
        &format!(
            "cannot run berth's in-container helper for \"{}\": {e}",
            arg0.to_string_lossy()
        ),
    )
}

/// Capabilities, no_new_privs and the user, in the order that keeps the wanted capabilities.
fn set_identity(process: &oci_spec::runtime::Process, ids: &IdMapping) -> Result<(), String> {
    use caps::{CapSet, Capability};
    let parse =
        |names: &Option<oci_spec::runtime::Capabilities>| -> std::collections::HashSet<Capability> {
            names
                .as_ref()
                .map(|s| {
                    s.iter()
                        .filter_map(|c| format!("CAP_{c}").parse::<Capability>().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
    let pc = process.capabilities().clone().unwrap_or_default();
    let bounding = parse(pc.bounding());
    for cap in caps::all() {
        if !bounding.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| format!("dropping {cap} from the bounding set: {e}"))?;
        }
    }
    if process.no_new_privileges().unwrap_or(false) {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(format!("setting no_new_privs: {}", nix::Error::last()));
        }
    }
    let user = process.user();
    if let Some(mask) = user.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let groups: Vec<Gid> = user
        .additional_gids()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .filter(|g| ids.maps_gid(**g))
        .map(|g| Gid::from_raw(*g))
        .collect();
    if ids.mode != IdMode::SingleId {
        nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    }
    let gid = Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| {
        format!(
            "cannot switch to group {}: {e} (is the id inside the user namespace's range?)",
            user.gid()
        )
    })?;
    let uid = Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| {
        format!(
            "cannot switch to user {}: {e} (is the id inside the user namespace's range?)",
            user.uid()
        )
    })?;
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    let permitted = parse(pc.permitted());
    let effective = parse(pc.effective());
    let inheritable = parse(pc.inheritable());
    // Shrink effective before permitted: the kernel refuses effective outside permitted.
    let eff_now: std::collections::HashSet<Capability> =
        effective.intersection(&permitted).copied().collect();
    caps::set(None, CapSet::Effective, &eff_now)
        .map_err(|e| format!("setting effective capabilities: {e}"))?;
    caps::set(None, CapSet::Inheritable, &inheritable)
        .map_err(|e| format!("setting inheritable capabilities: {e}"))?;
    caps::set(None, CapSet::Permitted, &permitted)
        .map_err(|e| format!("setting permitted capabilities: {e}"))?;
    let _ = caps::clear(None, CapSet::Ambient);
    for cap in parse(pc.ambient()) {
        caps::raise(None, CapSet::Ambient, cap)
            .map_err(|e| format!("raising ambient {cap}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_lines() {
        assert_eq!(parse_exit("exit 7"), Some(7));
        assert_eq!(parse_exit("signal 9"), Some(137));
        assert_eq!(parse_exit("garbage"), None);
    }

    #[test]
    fn start_errors_keep_code() {
        match start_error("127:exec: \"nope\": executable file not found in $PATH") {
            ContainerError::Start { code, message } => {
                assert_eq!(code, 127);
                assert!(message.contains("nope"));
            }
            other => panic!("{other:?}"),
        }
    }
}
