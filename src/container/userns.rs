//! Creating namespaced children: a fork-like raw clone, the parent/child handshake that
//! writes the id maps, and `run_in_userns` for work that must own files as mapped ids
//! (unpacking layers, copying or removing a rootfs).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{Gid, Pid, Uid};

use super::idmap::{IdMapError, IdMapping, IdMode};

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("cannot create namespaces ({flags}): {source}; check `berth doctor` (are unprivileged user namespaces enabled?)")]
    Clone { flags: String, source: nix::Error },
    #[error("{0}")]
    IdMap(#[from] IdMapError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Child(String),
}

/// The result of a fork-like clone.
pub enum Forked {
    Parent(Pid),
    Child,
}

/// Forks into new namespaces. Like fork(2): the child runs on a copy of the caller's stack.
/// The caller must be single-threaded, as for any fork that runs Rust code in the child.
pub fn clone_fork(flags: CloneFlags) -> Result<Forked, UsernsError> {
    // SAFETY: raw clone with a null stack behaves as fork(2) with namespace flags; no
    // pointers are passed. The process is single-threaded at every call site.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags.bits() | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match ret {
        -1 => Err(UsernsError::Clone {
            flags: format!("{flags:?}"),
            source: nix::Error::last(),
        }),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(Pid::from_raw(pid as i32))),
    }
}

/// Flags for a new user namespace when the mapping needs one.
pub fn userns_flag(ids: &IdMapping) -> CloneFlags {
    if ids.uses_userns() {
        CloneFlags::CLONE_NEWUSER
    } else {
        CloneFlags::empty()
    }
}

/// Child side of the handshake: wait until the parent has written our id maps, then become
/// root of the new namespace.
pub fn child_wait_for_maps(sync_rd: OwnedFd, ids: &IdMapping) -> Result<(), String> {
    let mut byte = [0u8; 1];
    let mut f = std::fs::File::from(sync_rd);
    match f.read(&mut byte) {
        Ok(1) if byte[0] == b'1' => {}
        _ => return Err("parent went away before the id maps were written".into()),
    }
    if ids.uses_userns() {
        nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .map_err(|e| format!("setresgid(0) in the user namespace: {e}"))?;
        nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            .map_err(|e| format!("setresuid(0) in the user namespace: {e}"))?;
        if ids.mode == IdMode::Subordinate {
            nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
        }
        // Where namespace root is not the user (keep-id), the uid change made this process
        // undumpable, and the user's helpers (slirp4netns, pasta) could no longer open its
        // /proc/PID/ns files; the user owns this namespace anyway.
        // SAFETY: prctl(PR_SET_DUMPABLE) takes integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1 as libc::c_ulong, 0, 0, 0) };
    }
    Ok(())
}

/// Parent side of the handshake: write the maps for `child` and release it.
pub fn parent_write_maps(child: Pid, ids: &IdMapping, sync_wr: OwnedFd) -> Result<(), UsernsError> {
    if let Err(e) = ids.apply(child.as_raw()) {
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(child, None);
        return Err(e.into());
    }
    let mut f = std::fs::File::from(sync_wr);
    f.write_all(b"1")?;
    Ok(())
}

/// Ends a forked child without running destructors or atexit handlers of the parent's copy.
pub fn child_exit(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it never returns.
    unsafe { libc::_exit(code) }
}

/// Runs `work` in a child that is root of a new user namespace with `ids` (and a private
/// mount namespace), so files it creates are owned by the mapped ids. Without a user
/// namespace (berth run as root) the work runs in a plain child.
pub fn run_in_userns<F>(ids: &IdMapping, work: F) -> Result<(), UsernsError>
where
    F: FnOnce() -> Result<(), String>,
{
    let (sync_rd, sync_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
    let (res_rd, res_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
    match clone_fork(userns_flag(ids) | CloneFlags::CLONE_NEWNS)? {
        Forked::Child => {
            drop(sync_wr);
            drop(res_rd);
            set_parent_death_signal();
            let mut res = std::fs::File::from(res_wr);
            let outcome = child_wait_for_maps(sync_rd, ids).and_then(|()| work());
            match outcome {
                Ok(()) => child_exit(0),
                Err(msg) => {
                    let _ = res.write_all(msg.as_bytes());
                    child_exit(1)
                }
            }
        }
        Forked::Parent(child) => {
            drop(sync_rd);
            drop(res_wr);
            parent_write_maps(child, ids, sync_wr)?;
            let mut msg = String::new();
            let _ = std::fs::File::from(res_rd).read_to_string(&mut msg);
            let status = wait_retry(child)?;
            match status {
                WaitStatus::Exited(_, 0) => Ok(()),
                WaitStatus::Exited(_, _) if !msg.is_empty() => Err(UsernsError::Child(msg)),
                other => Err(UsernsError::Child(format!(
                    "helper in the user namespace ended unexpectedly: {other:?}"
                ))),
            }
        }
    }
}

/// waitpid that retries on EINTR.
pub fn wait_retry(pid: Pid) -> Result<WaitStatus, UsernsError> {
    loop {
        match waitpid(pid, None) {
            Ok(s) => return Ok(s),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(std::io::Error::from_raw_os_error(e as i32).into()),
        }
    }
}

/// Kill this child when its parent dies, so a killed `berth` leaves nothing behind.
pub fn set_parent_death_signal() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes an integer signal number only.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
}

/// `berth unshare`: runs `argv` as root of a new user namespace with `ids` (and a private
/// mount namespace), where the user may chown and remove files owned by the mapped ids, and
/// returns its exit status (128+N when signal N ended it). Without a user namespace (berth
/// run as root) the command runs as it is. The caller must be single-threaded.
pub fn run_command(ids: &IdMapping, argv: &[String]) -> Result<i32, UsernsError> {
    let cargs: Vec<std::ffi::CString> = argv
        .iter()
        .map(|a| std::ffi::CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| UsernsError::Child("an argument holds a NUL byte".into()))?;
    let Some(program) = cargs.first() else {
        return Err(UsernsError::Child("no command to run".into()));
    };
    let (sync_rd, sync_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
    match clone_fork(userns_flag(ids) | CloneFlags::CLONE_NEWNS)? {
        Forked::Child => {
            drop(sync_wr);
            set_parent_death_signal();
            if let Err(e) = child_wait_for_maps(sync_rd, ids) {
                eprintln!("berth unshare: {e}");
                child_exit(125);
            }
            let err = nix::unistd::execvp(program, &cargs).unwrap_err();
            eprintln!("berth unshare: cannot run {}: {err}", argv[0]);
            child_exit(if err == nix::Error::ENOENT { 127 } else { 126 })
        }
        Forked::Parent(child) => {
            drop(sync_rd);
            // ^C at an interactive shell reaches the whole foreground group: the command
            // decides what it means, and berth stays to report its status.
            for sig in [nix::sys::signal::SIGINT, nix::sys::signal::SIGQUIT] {
                // SAFETY: SIG_IGN installs no handler code; only this process's disposition changes.
                let _ =
                    unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) };
            }
            parent_write_maps(child, ids, sync_wr)?;
            match wait_retry(child)? {
                WaitStatus::Exited(_, code) => Ok(code),
                WaitStatus::Signaled(_, sig, _) => Ok(128 + sig as i32),
                other => Err(UsernsError::Child(format!(
                    "the command ended unexpectedly: {other:?}"
                ))),
            }
        }
    }
}
