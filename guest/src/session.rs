//! One session: receive the Start frame, run the spec's process, relay stdio, the terminal,
//! signals and the exit status until the process is gone. Single-threaded: one poll loop
//! over the channel, the process's output and a signalfd for SIGCHLD.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use crate::protocol::{Builtin, Decoder, Frame, ProtocolError, StartOptions};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("the first frame must be Start, got {0:?}")]
    NoStart(Box<Frame>),
    #[error("{0}")]
    Sys(String),
}

/// What the agent does beyond running the process.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionConfig {
    /// PID 1 in a VM: also apply the spec's system-wide settings (hostname, tmpfs mounts,
    /// read-only root) and reap every orphan.
    pub system: bool,
}

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, nix::pty::Winsize);

/// The process as started: its pid and the host-facing ends of its stdio.
struct Running {
    pid: Pid,
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    /// With a terminal, stdout carries the pty master and stdin writes go to it too.
    pty: bool,
}

fn sys(what: &str) -> impl Fn(nix::Error) -> SessionError + '_ {
    move |e| SessionError::Sys(format!("{what}: {e}"))
}

/// Runs one session over `channel` and returns the process's exit status.
pub fn serve(channel: OwnedFd, cfg: SessionConfig) -> Result<i32, SessionError> {
    let mut chan = std::fs::File::from(channel);
    let first = Frame::read_from(&mut chan)?;
    let Frame::Start { spec, options } = first else {
        return Err(SessionError::NoStart(Box::new(first)));
    };
    let spec: Spec = match serde_json::from_slice(&spec) {
        Ok(s) => s,
        Err(e) => {
            Frame::Error {
                code: 125,
                message: format!("invalid runtime spec: {e}"),
            }
            .write_to(&mut chan)?;
            return Ok(125);
        }
    };
    if cfg.system {
        if let Err(message) = apply_system(&spec, &options) {
            Frame::Error { code: 125, message }.write_to(&mut chan)?;
            return Ok(125);
        }
    }

    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    let mut old = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old))
        .map_err(sys("blocking SIGCHLD"))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(sys("signalfd"))?;

    let mut running = match start(&spec, &options) {
        Ok(r) => r,
        Err((code, message)) => {
            let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            Frame::Error { code, message }.write_to(&mut chan)?;
            return Ok(code);
        }
    };
    let pid = running.pid;
    Frame::Started.write_to(&mut chan)?;
    let status = relay(&mut chan, &sfd, &mut running, pid, cfg)?;
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    Frame::Exit(status).write_to(&mut chan)?;
    Ok(status)
}

/// An exec session's process (`berth exec`), beside the one the session was opened for.
struct Exec {
    id: u32,
    running: Running,
    pid: Pid,
    status: Option<i32>,
    /// The guest's processes were stopped for this session (a [`Builtin::Layer`] job, as
    /// `docker commit` pauses the container): they continue when it ends.
    paused: bool,
}

/// The most exec sessions at once; a Start past it is refused.
const MAX_EXECS: usize = 64;

/// Where one polled descriptor's events go.
#[derive(Clone, Copy)]
enum Slot {
    Signals,
    Channel,
    /// Output of the main process (None) or of exec `Some(index)`; stderr when true.
    Output(Option<usize>, bool),
}

fn relay(
    chan: &mut std::fs::File,
    sfd: &SignalFd,
    r: &mut Running,
    pid: Pid,
    cfg: SessionConfig,
) -> Result<i32, SessionError> {
    let mut decoder = Decoder::default();
    let mut status: Option<i32> = None;
    let mut execs: Vec<Exec> = Vec::new();
    let mut chan_open = true;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        if status.is_some() && r.stdout.is_none() && r.stderr.is_none() {
            return Ok(status.unwrap_or(125));
        }
        let mut fds = Vec::new();
        let mut slots = Vec::new();
        let mut watch = |fd: RawFd, slot: Slot| {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
            slots.push(slot);
        };
        watch(sfd.as_raw_fd(), Slot::Signals);
        if chan_open {
            watch(chan.as_raw_fd(), Slot::Channel);
        }
        let outputs = std::iter::once((None, &*r))
            .chain(execs.iter().enumerate().map(|(i, e)| (Some(i), &e.running)));
        for (who, running) in outputs {
            if let Some(f) = &running.stdout {
                watch(f.as_raw_fd(), Slot::Output(who, false));
            }
            if let Some(f) = &running.stderr {
                watch(f.as_raw_fd(), Slot::Output(who, true));
            }
        }
        // Once the process is gone, only drain what it left in its pipes.
        // SIGCHLD is process-wide: when the agent shares its process with other threads
        // (tests, a host-side agent) another thread may take it, so poll for the exit too.
        let timeout = if status.is_some() { 100 } else { 50 };
        // SAFETY: fds is a valid array of initialised pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            if nix::Error::last() == nix::Error::EINTR {
                continue;
            }
            return Err(SessionError::Sys(format!("poll: {}", nix::Error::last())));
        }
        if n == 0 && status.is_some() {
            return Ok(status.unwrap_or(125));
        }
        while let Ok(Some(_)) = sfd.read_signal() {}
        reap(pid, &mut status, &mut execs, cfg);
        for (fd, slot) in fds.iter().zip(slots) {
            if fd.revents == 0 {
                continue;
            }
            match slot {
                Slot::Signals => {}
                Slot::Channel => match nix::unistd::read(chan.as_raw_fd(), &mut buf) {
                    Ok(0) | Err(_) => {
                        // The host went away: end the process as a killed berth would.
                        chan_open = false;
                        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                    }
                    Ok(k) => {
                        decoder.feed(&buf[..k]);
                        while let Some(frame) = decoder.next_frame()? {
                            match frame {
                                Frame::Session { id, frame } => {
                                    on_exec_frame(id, *frame, &mut execs, chan, cfg)?
                                }
                                other => handle(other, r, pid, cfg),
                            }
                        }
                    }
                },
                Slot::Output(who, is_err) => {
                    let (running, id) = match who {
                        None => (&mut *r, None),
                        Some(i) => match execs.get_mut(i) {
                            Some(e) => (&mut e.running, Some(e.id)),
                            None => continue,
                        },
                    };
                    forward_output(running, is_err, id, chan, &mut buf)?;
                }
            }
        }
        // Exec sessions whose process ended: what it left in its pipes, then its status.
        let mut i = 0;
        while i < execs.len() {
            let Some(code) = execs[i].status else {
                i += 1;
                continue;
            };
            let mut e = execs.remove(i);
            if e.paused {
                let _ = nix::sys::signal::kill(Pid::from_raw(-1), Signal::SIGCONT);
            }
            for is_err in [false, true] {
                while readable(&e.running, is_err) {
                    forward_output(&mut e.running, is_err, Some(e.id), chan, &mut buf)?;
                }
            }
            Frame::Session {
                id: e.id,
                frame: Box::new(Frame::Exit(code)),
            }
            .write_to(chan)?;
        }
    }
}

/// The exit status of a wait status, for the pid it names.
fn exit_of(ws: WaitStatus) -> Option<(Pid, i32)> {
    match ws {
        WaitStatus::Exited(p, code) => Some((p, code)),
        WaitStatus::Signaled(p, sig, _) => Some((p, 128 + sig as i32)),
        _ => None,
    }
}

/// Collects the ends of the main process and of the exec sessions' (PID 1: of every child,
/// orphans included).
fn reap(main: Pid, status: &mut Option<i32>, execs: &mut [Exec], cfg: SessionConfig) {
    // Without PID 1's duty to reap orphans: only our own children, one by one.
    let mut pids: Vec<Pid> = execs
        .iter()
        .filter(|e| e.status.is_none())
        .map(|e| e.pid)
        .collect();
    if status.is_none() {
        pids.push(main);
    }
    let mut record = |p: Pid, code: i32| {
        if p == main {
            *status = Some(code);
        } else if let Some(e) = execs.iter_mut().find(|e| e.pid == p) {
            e.status = Some(code);
        }
    };
    if cfg.system {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(ws) => {
                    if let Some((p, code)) = exit_of(ws) {
                        record(p, code);
                    }
                }
            }
        }
        return;
    }
    for p in pids {
        if let Ok(ws) = waitpid(p, Some(WaitPidFlag::WNOHANG)) {
            if let Some((p, code)) = exit_of(ws) {
                record(p, code);
            }
        }
    }
}

/// Whether the process's stdout (or stderr) has something to read now (or its end).
fn readable(r: &Running, is_err: bool) -> bool {
    let fd = if is_err { &r.stderr } else { &r.stdout };
    let Some(fd) = fd else { return false };
    let mut p = [libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: p is a live array of one pollfd.
    unsafe { libc::poll(p.as_mut_ptr(), 1, 0) > 0 }
}

/// Reads what the process wrote on stdout (or stderr) and sends it, in exec session `id`'s
/// envelope when given; closes the descriptor at its end.
fn forward_output(
    r: &mut Running,
    is_err: bool,
    id: Option<u32>,
    chan: &mut std::fs::File,
    buf: &mut [u8],
) -> Result<(), SessionError> {
    let slot = if is_err { &mut r.stderr } else { &mut r.stdout };
    let Some(fd) = slot else { return Ok(()) };
    match nix::unistd::read(fd.as_raw_fd(), buf) {
        Ok(0) | Err(_) => *slot = None,
        Ok(k) => {
            let data = buf[..k].to_vec();
            let frame = if is_err {
                Frame::Stderr(data)
            } else {
                Frame::Stdout(data)
            };
            match id {
                None => frame.write_to(chan)?,
                Some(id) => Frame::Session {
                    id,
                    frame: Box::new(frame),
                }
                .write_to(chan)?,
            }
        }
    }
    Ok(())
}

/// A frame of exec session `id`: a Start opens it (a new process, with the spec's process
/// settings and none of the VM-wide ones); the others reach its process as they would the
/// main one. Frames of sessions that are not open are dropped (the process ended).
fn on_exec_frame(
    id: u32,
    frame: Frame,
    execs: &mut Vec<Exec>,
    chan: &mut std::fs::File,
    cfg: SessionConfig,
) -> Result<(), SessionError> {
    let mut reply = |frame: Frame| {
        Frame::Session {
            id,
            frame: Box::new(frame),
        }
        .write_to(chan)
    };
    let Frame::Start { spec, options } = frame else {
        if let Some(e) = execs.iter_mut().find(|e| e.id == id) {
            handle(frame, &mut e.running, e.pid, SessionConfig::default());
        }
        return Ok(());
    };
    let refuse = |message: String| Frame::Error { code: 125, message };
    if execs.iter().any(|e| e.id == id) {
        reply(refuse(format!("exec session {id} is already open")))?;
        return Ok(());
    }
    if execs.len() >= MAX_EXECS {
        reply(refuse(format!(
            "{MAX_EXECS} exec sessions run in this microVM already: wait for one to end"
        )))?;
        return Ok(());
    }
    let spec: Spec = match serde_json::from_slice(&spec) {
        Ok(s) => s,
        Err(e) => {
            reply(refuse(format!("invalid runtime spec: {e}")))?;
            return Ok(());
        }
    };
    // PID 1 stops every other process of the guest while the writable layer is archived,
    // so no file is caught half-written; the job's own process is forked after.
    let pause = cfg.system && matches!(options.builtin, Some(Builtin::Layer { .. }));
    if pause {
        let _ = nix::sys::signal::kill(Pid::from_raw(-1), Signal::SIGSTOP);
    }
    let started = match &options.builtin {
        Some(job) => start_builtin(job),
        None => start(&spec, &options),
    };
    if pause && started.is_err() {
        let _ = nix::sys::signal::kill(Pid::from_raw(-1), Signal::SIGCONT);
    }
    match started {
        Ok(running) => {
            let pid = running.pid;
            execs.push(Exec {
                id,
                running,
                pid,
                status: None,
                paused: pause,
            });
            reply(Frame::Started)?;
        }
        Err((code, message)) => reply(Frame::Error { code, message })?,
    }
    Ok(())
}

fn handle(frame: Frame, r: &mut Running, pid: Pid, cfg: SessionConfig) {
    match frame {
        // Only PID 1 owns the guest's /etc; a failed rewrite keeps the old names.
        Frame::Hosts(text) if cfg.system => {
            let _ = rewrite_hosts(&text);
        }
        Frame::Stdin(data) => {
            let fd = if r.pty {
                r.stdout.as_ref()
            } else {
                r.stdin.as_ref()
            };
            if let Some(fd) = fd {
                let _ = write_all(fd.as_raw_fd(), &data);
            }
        }
        Frame::StdinEof => {
            if r.pty {
                if let Some(fd) = &r.stdout {
                    let _ = write_all(fd.as_raw_fd(), &[4u8]);
                }
            } else {
                r.stdin = None;
            }
        }
        Frame::Resize { rows, cols } if r.pty => {
            if let Some(fd) = &r.stdout {
                let ws = nix::pty::Winsize {
                    ws_row: rows,
                    ws_col: cols,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                // SAFETY: TIOCSWINSZ reads one Winsize from a valid pointer.
                let _ = unsafe { set_winsize(fd.as_raw_fd(), &ws) };
            }
        }
        Frame::Signal(n) => {
            if let Ok(sig) = Signal::try_from(n) {
                let _ = nix::sys::signal::kill(pid, sig);
            }
        }
        // Frames only the guest sends, or a second Start: ignored.
        _ => {}
    }
}

fn write_all(fd: RawFd, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        // SAFETY: the descriptor stays open for this call; we only borrow it.
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        match nix::unistd::write(b, data) {
            Ok(n) => data = &data[n..],
            Err(nix::Error::EINTR) | Err(nix::Error::EAGAIN) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The /etc files the host may send, by name (passwd and group with `--userns=keep-id`, which
/// adds the user's entry to the image's).
const ETC_FILES: &[&str] = &["hostname", "hosts", "resolv.conf", "passwd", "group"];
/// Where /etc/hosts's own tmpfs is mounted while it is set up (then detached and removed).
const HOSTS_STAGING: &str = "/.berth-hosts";

/// Gives /etc/hosts (already written with `content`) a tmpfs of its own, bind-mounted over
/// it, as a container's is a bind mount: berth rewrites it while the process runs (peers on a
/// user-defined network come and go), also when the root is made read-only.
fn mount_hosts(content: &str) -> Result<(), String> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    std::fs::create_dir_all(HOSTS_STAGING).map_err(|e| format!("creating {HOSTS_STAGING}: {e}"))?;
    mount(
        Some("tmpfs"),
        HOSTS_STAGING,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=1m"),
    )
    .map_err(|e| format!("mounting a tmpfs for /etc/hosts: {e}"))?;
    let staged = format!("{HOSTS_STAGING}/hosts");
    let result = std::fs::write(&staged, content)
        .map_err(|e| format!("writing {staged}: {e}"))
        .and_then(|()| {
            mount(
                Some(staged.as_str()),
                "/etc/hosts",
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("bind-mounting /etc/hosts: {e}"))
        });
    let _ = umount2(HOSTS_STAGING, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir(HOSTS_STAGING);
    result
}

/// Rewrites /etc/hosts in place (the same inode: its own tmpfs, see [`mount_hosts`]).
fn rewrite_hosts(text: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open("/etc/hosts")?
        .write_all(text)
}

/// Hostname, /etc files, tmpfs mounts and the read-only root: settings that belong to the
/// whole VM.
fn apply_system(spec: &Spec, options: &StartOptions) -> Result<(), String> {
    crate::net::configure(options.network.as_ref())?;
    if let Some(h) = spec.hostname() {
        nix::unistd::sethostname(h).map_err(|e| format!("sethostname: {e}"))?;
    }
    for (name, content) in &options.etc_files {
        // Only the names berth writes, and never through a symlink the image placed there.
        if !ETC_FILES.contains(&name.as_str()) {
            continue;
        }
        let path = std::path::Path::new("/etc").join(name);
        if std::fs::symlink_metadata("/etc").is_ok_and(|m| !m.is_dir()) {
            break;
        }
        let _ = std::fs::create_dir_all("/etc");
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            let _ = std::fs::remove_file(&path);
        }
        std::fs::write(&path, content).map_err(|e| format!("writing {}: {e}", path.display()))?;
        if name == "hosts" {
            mount_hosts(content)?;
        }
    }
    for m in spec.mounts().as_deref().unwrap_or(&[]) {
        if m.typ().as_deref() != Some("tmpfs") || m.destination().starts_with("/dev") {
            continue;
        }
        let dest = m.destination();
        std::fs::create_dir_all(dest).map_err(|e| format!("creating {}: {e}", dest.display()))?;
        let data: Vec<String> = m
            .options()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|o| o.contains('='))
            .collect();
        let flags = nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV;
        nix::mount::mount(
            Some("tmpfs"),
            dest,
            Some("tmpfs"),
            flags,
            Some(data.join(",").as_str()),
        )
        .map_err(|e| format!("mounting tmpfs on {}: {e}", dest.display()))?;
    }
    for m in spec.mounts().as_deref().unwrap_or(&[]) {
        if m.typ().as_deref() == Some("9p") {
            mount_share(m)?;
        }
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REMOUNT | nix::mount::MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| format!("making the root read-only: {e}"))?;
    }
    Ok(())
}

/// Mounts a host directory berth shares over virtio-9p (`-v`, `--mount`): the spec's mount
/// names the share's tag as its source.
fn mount_share(m: &oci_spec::runtime::Mount) -> Result<(), String> {
    use nix::mount::MsFlags;
    let tag = m.source().as_ref().and_then(|s| s.to_str()).unwrap_or("");
    if tag.is_empty() || tag.len() > 31 || !tag.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!("invalid share tag {tag:?} in the spec"));
    }
    let dest = m.destination();
    if !dest.is_absolute() {
        return Err(format!(
            "a share's destination must be absolute, not {}",
            dest.display()
        ));
    }
    std::fs::create_dir_all(dest).map_err(|e| format!("creating {}: {e}", dest.display()))?;
    let options = m.options().clone().unwrap_or_default();
    let mut flags = MsFlags::empty();
    for o in &options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            _ => {}
        }
    }
    // 9P2000.L without a cache: what the host changes, the guest sees at once.
    nix::mount::mount(
        Some(tag),
        dest,
        Some("9p"),
        flags,
        Some("trans=virtio,version=9p2000.L,cache=none"),
    )
    .map_err(|e| {
        format!(
            "mounting the shared directory {tag} on {}: {e}",
            dest.display()
        )
    })
}

/// Starts the spec's process; on failure returns Docker's code and a message.
fn start(spec: &Spec, options: &StartOptions) -> Result<Running, (i32, String)> {
    let process = spec
        .process()
        .as_ref()
        .ok_or((125, "the spec has no process".to_string()))?;
    let args = process.args().clone().unwrap_or_default();
    let Some(program) = args.first() else {
        return Err((
            125,
            "no command: give one after the image name, or set Cmd/Entrypoint in the image".into(),
        ));
    };
    let env: Vec<(OsString, OsString)> = process
        .env()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        })
        .collect();
    let cwd = process.cwd().clone();
    let _ = std::fs::create_dir_all(&cwd);
    let user = process.user();
    let (uid, gid) = (user.uid(), user.gid());
    let groups: Vec<libc::gid_t> = user.additional_gids().clone().unwrap_or_default();
    let umask = user.umask();
    let rlimits: Vec<(nix::sys::resource::Resource, u64, u64)> = process
        .rlimits()
        .clone()
        .unwrap_or_default()
        .iter()
        .filter_map(|rl| {
            rlimit_resource(&format!("{:?}", rl.typ())).map(|res| (res, rl.soft(), rl.hard()))
        })
        .collect();
    let terminal = process.terminal().unwrap_or(false);

    let mut cmd = Command::new(program);
    cmd.arg0(program)
        .args(&args[1..])
        .env_clear()
        .envs(env)
        .current_dir(&cwd);
    let mut master = None;
    if terminal {
        let ws = nix::pty::Winsize {
            ws_row: options.rows.max(1),
            ws_col: options.cols.max(1),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty =
            nix::pty::openpty(Some(&ws), None).map_err(|e| (125, format!("opening a pty: {e}")))?;
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| (125, format!("pty: {e}")));
        cmd.stdin(Stdio::from(dup(&pty.slave)?))
            .stdout(Stdio::from(dup(&pty.slave)?))
            .stderr(Stdio::from(pty.slave));
        master = Some(pty.master);
    } else {
        cmd.stdin(if options.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    }
    // SAFETY: the closure only makes async-signal-safe syscalls (sigprocmask, setsid, ioctl,
    // setrlimit, umask, setgroups, setresgid, setresuid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let empty = SigSet::empty();
            nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&empty), None)?;
            // Dispositions ignored by whoever started the agent must not reach the process.
            for sig in 1..32 {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            nix::unistd::setsid()?;
            if terminal && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for (res, soft, hard) in &rlimits {
                nix::sys::resource::setrlimit(*res, *soft, *hard)?;
            }
            if let Some(m) = umask {
                libc::umask(m as libc::mode_t);
            }
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0 && libc::geteuid() == 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getegid() != gid && libc::setresgid(gid, gid, gid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::geteuid() != uid && libc::setresuid(uid, uid, uid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => (
            127,
            format!("exec: \"{program}\": executable file not found in $PATH"),
        ),
        std::io::ErrorKind::PermissionDenied => {
            (126, format!("exec: \"{program}\": permission denied"))
        }
        _ => (126, format!("exec: \"{program}\": {e}")),
    })?;
    let to_fd = |f: Option<OwnedFd>| f;
    let (stdin, stdout, stderr) = match master {
        Some(m) => (None, Some(m), None),
        None => (
            to_fd(child.stdin.take().map(OwnedFd::from)),
            to_fd(child.stdout.take().map(OwnedFd::from)),
            to_fd(child.stderr.take().map(OwnedFd::from)),
        ),
    };
    Ok(Running {
        pid: Pid::from_raw(child.id() as i32),
        stdin,
        stdout,
        stderr,
        pty: terminal,
    })
}

/// The root's writable layer (the overlay's upper directory), for [`Builtin::Layer`]: opened
/// by PID 1 before it enters the root, where the directory is out of reach.
static UPPER: OnceLock<OwnedFd> = OnceLock::new();

/// Records the directory [`Builtin::Layer`] archives (once; later calls are ignored).
pub fn set_upper(dir: OwnedFd) {
    let _ = UPPER.set(dir);
}

/// Starts one of the agent's own jobs in a child process of its own, with pipes for stdio as
/// a spawned process has: the session relays and reaps it like any other.
fn start_builtin(job: &Builtin) -> Result<Running, (i32, String)> {
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| (125, format!("creating a pipe: {e}")))
    };
    let input = matches!(job, Builtin::CopyIn { .. })
        .then(pipe)
        .transpose()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    // SAFETY: the agent's session loop is single-threaded; the child only runs the job on
    // descriptors it owns and leaves with _exit, never returning into the parent's code.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err((125, format!("fork: {e}"))),
        Ok(nix::unistd::ForkResult::Child) => {
            let code = match builtin_child(job, input, out_w, err_w) {
                Ok(()) => 0,
                Err(()) => 1,
            };
            // SAFETY: ends the child at once, without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(Running {
            pid: child,
            stdin: input.map(|(_, w)| w),
            stdout: Some(out_r),
            stderr: Some(err_r),
            pty: false,
        }),
    }
}

/// The child's side of [`start_builtin`]: stdin, stdout and stderr become the pipes, every
/// other descriptor of the agent's is closed (a copy of another session's stdin would keep
/// its end from coming), then the job runs; its failure is told on stderr.
fn builtin_child(
    job: &Builtin,
    input: Option<(OwnedFd, OwnedFd)>,
    out: OwnedFd,
    err: OwnedFd,
) -> Result<(), ()> {
    let fail = |message: String| {
        let _ = write_all(2, format!("{message}\n").as_bytes());
    };
    if let Builtin::Layer { .. } = job {
        let Some(upper) = UPPER.get() else {
            let _ = write_all(err.as_raw_fd(), b"this sandbox has no writable layer\n");
            return Err(());
        };
        if let Err(e) = nix::unistd::fchdir(upper.as_raw_fd()) {
            let _ = write_all(
                err.as_raw_fd(),
                format!("entering the writable layer: {e}\n").as_bytes(),
            );
            return Err(());
        }
    }
    let stdin = input.as_ref().map(|(r, _)| r.as_raw_fd());
    for (from, to) in [
        (stdin, 0),
        (Some(out.as_raw_fd()), 1),
        (Some(err.as_raw_fd()), 2),
    ] {
        if let Some(fd) = from {
            // SAFETY: dup2 onto the standard descriptors, which this child owns.
            if unsafe { libc::dup2(fd, to) } < 0 {
                return Err(());
            }
        }
    }
    // SAFETY: closes this child's descriptors from 3 up; none is used after this.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    std::mem::forget((input, out, err));
    // SAFETY: 0, 1 and 2 are this child's, set just above.
    let (stdin, stdout) = unsafe { (std::fs::File::from_raw_fd(0), std::fs::File::from_raw_fd(1)) };
    let stdout = std::io::BufWriter::with_capacity(256 << 10, stdout);
    match job {
        Builtin::CopyOut { path, follow } => crate::archive::produce(path, *follow, stdout),
        Builtin::CopyIn {
            dest,
            contents,
            stream,
            archive,
            keep_kinds,
        } => crate::archive::consume(dest, *contents, *stream, *archive, *keep_kinds, stdin),
        Builtin::Layer { skip } => {
            let skip: Vec<&str> = skip.iter().map(String::as_str).collect();
            crate::archive::upper_layer(std::path::Path::new("."), &skip, stdout)
                .map_err(|e| format!("reading the writable layer: {e}"))
        }
        Builtin::Processes => list_processes(stdout),
    }
    .map_err(fail)
}

/// Writes [`Builtin::Processes`]'s list from the guest's /proc.
fn list_processes(mut out: impl std::io::Write) -> Result<(), String> {
    let me = std::process::id() as i32;
    // SAFETY: sysconf only reads a system constant.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let dir = std::fs::read_dir("/proc").map_err(|e| format!("reading /proc: {e}"))?;
    let mut pids: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        if pid == 1 || pid == me {
            continue;
        }
        // A process may end while it is read: it is left out.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
        let (Some(ppid), Some(utime), Some(stime)) = (num(1), num(11), num(12)) else {
            continue;
        };
        // The kernel's threads: kthreadd (2) and its children.
        if pid == 2 || ppid == 2 {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmdline)
            .replace('\0', " ")
            .trim()
            .to_string();
        let cmd = if cmd.is_empty() {
            let comm = head.split_once('(').map(|(_, c)| c).unwrap_or("");
            format!("[{comm}]")
        } else {
            cmd
        };
        let p = crate::protocol::GuestProcess {
            pid,
            ppid: ppid as i32,
            uid,
            cpu_ms: (utime + stime) * 1000 / tick,
            cmd,
        };
        let line = serde_json::to_string(&p).map_err(|e| e.to_string())?;
        writeln!(out, "{line}").map_err(|e| format!("writing the list: {e}"))?;
    }
    out.flush().map_err(|e| format!("writing the list: {e}"))
}

fn rlimit_resource(name: &str) -> Option<nix::sys::resource::Resource> {
    Some(match name.trim_start_matches("Rlimit") {
        "Nofile" => nix::sys::resource::Resource::RLIMIT_NOFILE,
        "Nproc" => nix::sys::resource::Resource::RLIMIT_NPROC,
        "Core" => nix::sys::resource::Resource::RLIMIT_CORE,
        "Stack" => nix::sys::resource::Resource::RLIMIT_STACK,
        "Memlock" => nix::sys::resource::Resource::RLIMIT_MEMLOCK,
        "Fsize" => nix::sys::resource::Resource::RLIMIT_FSIZE,
        "Cpu" => nix::sys::resource::Resource::RLIMIT_CPU,
        "As" => nix::sys::resource::Resource::RLIMIT_AS,
        "Data" => nix::sys::resource::Resource::RLIMIT_DATA,
        "Locks" => nix::sys::resource::Resource::RLIMIT_LOCKS,
        "Msgqueue" => nix::sys::resource::Resource::RLIMIT_MSGQUEUE,
        "Nice" => nix::sys::resource::Resource::RLIMIT_NICE,
        "Rss" => nix::sys::resource::Resource::RLIMIT_RSS,
        "Rtprio" => nix::sys::resource::Resource::RLIMIT_RTPRIO,
        "Rttime" => nix::sys::resource::Resource::RLIMIT_RTTIME,
        "Sigpending" => nix::sys::resource::Resource::RLIMIT_SIGPENDING,
        _ => return None,
    })
}

/// A connected pair of stream sockets: the host end and the agent end (tests, and a
/// host-side agent for debugging).
pub fn channel_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into the array we pass.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Used by tests: the host side of a whole session, collecting stdout, stderr and the status.
pub fn drive(
    host: OwnedFd,
    spec: &[u8],
    options: StartOptions,
    input: &[Frame],
) -> Result<(Vec<u8>, Vec<u8>, Frame), ProtocolError> {
    let mut f = std::fs::File::from(host);
    Frame::Start {
        spec: spec.to_vec(),
        options,
    }
    .write_to(&mut f)?;
    for frame in input {
        frame.write_to(&mut f)?;
    }
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        match Frame::read_from(&mut f)? {
            Frame::Stdout(d) => out.extend(d),
            Frame::Stderr(d) => err.extend(d),
            end @ (Frame::Exit(_) | Frame::Error { .. }) => return Ok((out, err, end)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(args: &[&str], env: &[&str], cwd: &str, terminal: bool) -> Vec<u8> {
        let mut s = Spec::default();
        let mut p = s.process().clone().unwrap_or_default();
        p.set_args(Some(args.iter().map(|a| a.to_string()).collect()));
        p.set_env(Some(env.iter().map(|a| a.to_string()).collect()));
        p.set_cwd(cwd.into());
        p.set_terminal(Some(terminal));
        let mut u = p.user().clone();
        u.set_uid(nix::unistd::geteuid().as_raw());
        u.set_gid(nix::unistd::getegid().as_raw());
        u.set_additional_gids(None);
        p.set_user(u);
        p.set_capabilities(None);
        p.set_rlimits(None);
        s.set_process(Some(p));
        serde_json::to_vec(&s).unwrap()
    }

    fn session(
        spec_bytes: Vec<u8>,
        options: StartOptions,
        input: Vec<Frame>,
    ) -> (String, String, Frame) {
        let (host, agent) = channel_pair().unwrap();
        let t = std::thread::spawn(move || serve(agent, SessionConfig::default()));
        let (out, err, end) = drive(host, &spec_bytes, options, &input).unwrap();
        t.join().unwrap().unwrap();
        (
            String::from_utf8_lossy(&out).into(),
            String::from_utf8_lossy(&err).into(),
            end,
        )
    }

    const PATH: &str = "PATH=/usr/bin:/bin";
    fn opts(stdin: bool) -> StartOptions {
        StartOptions {
            stdin,
            rows: 24,
            cols: 80,
            etc_files: vec![],
            network: None,
            builtin: None,
        }
    }

    #[test]
    fn runs_the_process_with_env_cwd_and_exit_status() {
        let s = spec(
            &["sh", "-c", "echo $GREETING; pwd; echo oops >&2; exit 7"],
            &[PATH, "GREETING=hi"],
            "/tmp",
            false,
        );
        let (out, err, end) = session(s, opts(false), vec![]);
        assert_eq!(out, "hi\n/tmp\n");
        assert_eq!(err, "oops\n");
        assert_eq!(end, Frame::Exit(7));
    }

    #[test]
    fn stdin_and_eof_reach_the_process() {
        let s = spec(&["sh", "-c", "wc -c"], &[PATH], "/", false);
        let (out, _, end) = session(
            s,
            opts(true),
            vec![Frame::Stdin(b"12345".to_vec()), Frame::StdinEof],
        );
        assert_eq!(out.trim(), "5");
        assert_eq!(end, Frame::Exit(0));
    }

    #[test]
    fn signals_give_128_plus_n() {
        let s = spec(&["sh", "-c", "kill -TERM $$; sleep 5"], &[PATH], "/", false);
        let (_, _, end) = session(s, opts(false), vec![]);
        assert_eq!(end, Frame::Exit(128 + 15));
        let s = spec(&["sleep", "30"], &[PATH], "/", false);
        let (_, _, end) = session(s, opts(false), vec![Frame::Signal(9)]);
        assert_eq!(end, Frame::Exit(137));
    }

    #[test]
    fn missing_commands_are_docker_errors() {
        let s = spec(&["no-such-command-here"], &[PATH], "/", false);
        let (_, _, end) = session(s, opts(false), vec![]);
        assert!(matches!(end, Frame::Error { code: 127, .. }), "{end:?}");
        let (host, agent) = channel_pair().unwrap();
        let t = std::thread::spawn(move || serve(agent, SessionConfig::default()));
        let (_, _, end) = drive(host, b"not json", opts(false), &[]).unwrap();
        assert!(matches!(end, Frame::Error { code: 125, .. }));
        t.join().unwrap().unwrap();
    }

    #[test]
    fn terminal_sessions_get_a_sized_pty() {
        let s = spec(
            &["sh", "-c", "stty size; test -t 0 && echo tty"],
            &[PATH],
            "/",
            true,
        );
        let (out, _, end) = session(
            s,
            StartOptions {
                stdin: true,
                rows: 33,
                cols: 101,
                etc_files: vec![],
                network: None,
                builtin: None,
            },
            vec![],
        );
        assert!(out.contains("33 101"), "{out:?}");
        assert!(out.contains("tty"), "{out:?}");
        assert_eq!(end, Frame::Exit(0));
    }

    /// An agent serving a session whose main process is `cat` (it ends at stdin's end):
    /// the host's end of the channel, and the agent's thread.
    fn serving_cat() -> (
        std::fs::File,
        std::thread::JoinHandle<Result<i32, SessionError>>,
    ) {
        let (host, agent) = channel_pair().unwrap();
        let t = std::thread::spawn(move || serve(agent, SessionConfig::default()));
        let mut f = std::fs::File::from(host);
        Frame::Start {
            spec: spec(&["cat"], &[PATH], "/", false),
            options: opts(true),
        }
        .write_to(&mut f)
        .unwrap();
        assert_eq!(Frame::read_from(&mut f).unwrap(), Frame::Started);
        (f, t)
    }

    #[test]
    fn exec_sessions_run_beside_the_main_process() {
        let (mut f, t) = serving_cat();
        let session = |id: u32, frame: Frame| Frame::Session {
            id,
            frame: Box::new(frame),
        };
        let exec = |args: &[&str]| Frame::Start {
            spec: spec(args, &[PATH], "/tmp", false),
            options: opts(false),
        };
        session(1, exec(&["sh", "-c", "pwd; echo oops >&2; exit 4"]))
            .write_to(&mut f)
            .unwrap();
        session(2, exec(&["no-such-command-here"]))
            .write_to(&mut f)
            .unwrap();
        let (mut out, mut err, mut exit, mut failed) = (Vec::new(), Vec::new(), None, None);
        while exit.is_none() || failed.is_none() {
            match Frame::read_from(&mut f).unwrap() {
                Frame::Session { id: 1, frame } => match *frame {
                    Frame::Stdout(d) => out.extend(d),
                    Frame::Stderr(d) => err.extend(d),
                    Frame::Exit(c) => exit = Some(c),
                    Frame::Started => {}
                    other => panic!("{other:?}"),
                },
                Frame::Session { id: 2, frame } => failed = Some(*frame),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            (&out[..], &err[..], exit),
            (&b"/tmp\n"[..], &b"oops\n"[..], Some(4))
        );
        assert!(
            matches!(failed, Some(Frame::Error { code: 127, .. })),
            "{failed:?}"
        );
        // The main process still runs, and ends when told.
        Frame::Stdin(b"main".to_vec()).write_to(&mut f).unwrap();
        Frame::StdinEof.write_to(&mut f).unwrap();
        assert_eq!(
            Frame::read_from(&mut f).unwrap(),
            Frame::Stdout(b"main".to_vec())
        );
        assert_eq!(Frame::read_from(&mut f).unwrap(), Frame::Exit(0));
        t.join().unwrap().unwrap();
    }

    /// Runs exec session `id` on `f` to its end: its stdout, stderr and exit status.
    fn run_session(
        f: &mut std::fs::File,
        id: u32,
        start: Frame,
        input: &[u8],
    ) -> (Vec<u8>, String, i32) {
        let session = |frame: Frame| Frame::Session {
            id,
            frame: Box::new(frame),
        };
        session(start).write_to(f).unwrap();
        if !input.is_empty() {
            session(Frame::Stdin(input.to_vec())).write_to(f).unwrap();
        }
        session(Frame::StdinEof).write_to(f).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            match Frame::read_from(f).unwrap() {
                Frame::Session { id: got, frame } if got == id => match *frame {
                    Frame::Stdout(d) => out.extend(d),
                    Frame::Stderr(d) => err.extend(d),
                    Frame::Exit(c) => return (out, String::from_utf8_lossy(&err).into(), c),
                    Frame::Started => {}
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn builtin_jobs_copy_files_in_and_out_and_archive_the_writable_layer() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let upper = d.path().join("upper");
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::write(upper.join("etc/hosts"), "written by the agent").unwrap();
        std::fs::write(upper.join("etc/motd"), "changed").unwrap();
        set_upper(OwnedFd::from(std::fs::File::open(&upper).unwrap()));

        let (mut f, t) = serving_cat();
        let job = |builtin: Builtin| Frame::Start {
            spec: spec(&["unused"], &[PATH], "/", false),
            options: StartOptions {
                builtin: Some(builtin),
                ..opts(true)
            },
        };

        // In: a tar stream with a directory and a file, extracted into `dest`.
        let mut tar_in = Vec::new();
        {
            let mut b = tar::Builder::new(&mut tar_in);
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, "dir", std::io::empty()).unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o640);
            h.set_size(5);
            b.append_data(&mut h, "dir/file", &b"hello"[..]).unwrap();
            b.finish().unwrap();
        }
        let copy_in = job(Builtin::CopyIn {
            dest: dest.to_string_lossy().into(),
            contents: false,
            stream: true,
            archive: false,
            keep_kinds: false,
        });
        let (_, err, code) = run_session(&mut f, 1, copy_in, &tar_in);
        assert_eq!((code, err.as_str()), (0, ""));
        assert_eq!(
            std::fs::read_to_string(dest.join("dir/file")).unwrap(),
            "hello"
        );

        // Out: the same file back as a tar stream named after it.
        let copy_out = job(Builtin::CopyOut {
            path: dest.join("dir/file").to_string_lossy().into(),
            follow: false,
        });
        let (out, err, code) = run_session(&mut f, 2, copy_out, b"");
        assert_eq!((code, err.as_str()), (0, ""));
        let mut a = tar::Archive::new(&out[..]);
        let mut e = a.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_string_lossy(), "file");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut e, &mut text).unwrap();
        assert_eq!(text, "hello");

        // A missing source fails with the reason on stderr.
        let missing = job(Builtin::CopyOut {
            path: "/no/such/path".into(),
            follow: false,
        });
        let (_, err, code) = run_session(&mut f, 3, missing, b"");
        assert_eq!(code, 1);
        assert!(err.contains("/no/such/path"), "{err}");

        // The writable layer, without what the agent wrote itself.
        let layer = job(Builtin::Layer {
            skip: vec!["etc/hosts".into()],
        });
        let (out, err, code) = run_session(&mut f, 4, layer, b"");
        assert_eq!((code, err.as_str()), (0, ""));
        let names: Vec<String> = tar::Archive::new(&out[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["etc", "etc/motd"]);

        // The processes, with the session's own `cat` among them.
        let (out, err, code) = run_session(&mut f, 5, job(Builtin::Processes), b"");
        assert_eq!((code, err.as_str()), (0, ""));
        let listed: Vec<crate::protocol::GuestProcess> = String::from_utf8_lossy(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let me = std::process::id() as i32;
        assert!(
            listed.iter().any(|p| p.cmd == "cat" && p.ppid == me),
            "{listed:?}"
        );

        Frame::StdinEof.write_to(&mut f).unwrap();
        assert_eq!(Frame::read_from(&mut f).unwrap(), Frame::Exit(0));
        t.join().unwrap().unwrap();
    }

    #[test]
    fn a_first_frame_other_than_start_is_refused() {
        let (host, agent) = channel_pair().unwrap();
        let mut f = std::fs::File::from(host);
        Frame::Stdin(b"x".to_vec()).write_to(&mut f).unwrap();
        assert!(matches!(
            serve(agent, SessionConfig::default()),
            Err(SessionError::NoStart(_))
        ));
        drop(f);
    }
}
