//! The one program berth executes inside a container: `berth-dmz` (dmz.c beside this file), a static
//! executable of a few KiB carried in berth's binary and run from a sealed memfd.
//!
//! Why: if the process that calls execve for the container's command were berth itself, a
//! command that is a script starting `#!/proc/self/exe` would run berth's host binary inside
//! the container (with the image's dynamic loader), keep it open and reopen it for writing
//! once no berth runs it — the CVE-2019-5736 class, serious for a rootless tool whose binary
//! belongs to the user that container root maps to. After [`exec`], /proc/self/exe in the
//! container names a memfd that can neither be written, grown nor shrunk; berth's own binary
//! is never executed with the container's root. The copy costs one 10 KiB write per start.
//!
//! The same program is the container's init with `--init` (tini's role in Docker), running
//! under the container's capabilities, no_new_privs and seccomp filter.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The program, built by build.rs from dmz.c beside this file.
static PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth-dmz"));

/// What the helper does once it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Becomes the command (a PATH search as execvp does).
    Exec,
    /// Stays as PID 1: runs the command as its child, forwards signals, reaps orphans and
    /// exits with the command's status.
    Init,
}

impl Mode {
    fn argv0(self) -> &'static CStr {
        match self {
            Mode::Exec => c"berth-exec",
            Mode::Init => c"berth-init",
        }
    }
}

/// `MFD_EXEC` (Linux 6.3): an executable memfd where `vm.memfd_noexec` would seal it otherwise.
const MFD_EXEC: libc::c_uint = 0x10;

/// A sealed, executable copy of the helper: write, grow and shrink are refused to everyone,
/// and the seals themselves are sealed.
pub fn sealed() -> Result<OwnedFd, String> {
    let name = c"berth-dmz";
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: memfd_create reads a NUL-terminated name; the result is checked.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), base | MFD_EXEC) };
    if fd < 0 && nix::Error::last() == nix::Error::EINVAL {
        // Before Linux 6.3 the flag is unknown, and a memfd is executable anyway.
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(name.as_ptr(), base) };
    }
    if fd < 0 {
        return Err(format!(
            "creating the memfd for berth's in-container helper: {}",
            nix::Error::last()
        ));
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut left = PROGRAM;
    while !left.is_empty() {
        match nix::unistd::write(&fd, left) {
            Ok(n) => left = &left[n..],
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(format!("writing berth's in-container helper: {e}")),
        }
    }
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl(F_ADD_SEALS) with an integer argument on a descriptor we own.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(format!(
            "sealing berth's in-container helper: {}",
            nix::Error::last()
        ));
    }
    Ok(fd)
}

/// Executes the sealed helper in `mode` for `args` with `env`; it reports a failure to run
/// the command on `err` as "CODE:message" (Docker's 126 and 127). Returns only if the helper
/// itself could not be executed.
pub fn exec(
    program: &OwnedFd,
    mode: Mode,
    err: RawFd,
    args: &[CString],
    env: &[CString],
) -> nix::Error {
    // The helper inherits `err` and makes it close-on-exec again before the command runs.
    // SAFETY: fcntl(F_SETFD) with an integer argument on a descriptor the caller owns.
    if unsafe { libc::fcntl(err, libc::F_SETFD, 0) } != 0 {
        return nix::Error::last();
    }
    let errfd = CString::new(err.to_string()).expect("digits have no NUL");
    let mut argv: Vec<*const libc::c_char> = Vec::with_capacity(args.len() + 3);
    argv.push(mode.argv0().as_ptr());
    argv.push(errfd.as_ptr());
    argv.extend(args.iter().map(|a| a.as_ptr()));
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: execveat with AT_EMPTY_PATH runs the file behind `program`; argv and envp are
    // NULL-terminated arrays of NUL-terminated strings that outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            program.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    nix::Error::last()
}

/// Closes every descriptor above 2 but `keep`, before the container's process chooses its
/// working directory: a descriptor inherited from whoever ran berth must not reach the
/// container, not even as `-w /proc/self/fd/N` (the CVE-2024-21626 class).
pub fn close_inherited(keep: &[RawFd]) -> Result<(), String> {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|fd| *fd > 2).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first: libc::c_uint = 3;
    for k in keep {
        let k = k as libc::c_uint;
        if k > first {
            close_range(first, k - 1)?;
        }
        first = k + 1;
    }
    close_range(first, libc::c_uint::MAX)?;
    Ok(())
}

/// Marks every descriptor above 2 that berth inherited close-on-exec, once at its start
/// (a single system call): the helpers it runs (the monitor, network helpers, fuse-overlayfs,
/// passt) then hold none of the caller's files, pipes or terminals — no `ssh host berth run
/// -d …` kept open by a monitor holding its pipe. Sockets passed by socket activation
/// (`LISTEN_FDS` for this process) are left as they are.
pub fn cloexec_inherited() {
    let activated = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let passed: libc::c_uint = if activated {
        std::env::var("LISTEN_FDS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    } else {
        0
    };
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on this process's
    // descriptors; no memory is passed. Failure (before Linux 5.11) leaves them as they were.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 + passed,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
}

fn close_range(first: libc::c_uint, last: libc::c_uint) -> Result<(), String> {
    // SAFETY: close_range only closes descriptors of this process; no memory is passed.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) };
    if r == 0 {
        return Ok(());
    }
    let e = nix::Error::last();
    if e != nix::Error::ENOSYS {
        return Err(format!("closing inherited descriptors: {e}"));
    }
    // Before Linux 5.9: close what /proc lists.
    let listed: Vec<libc::c_uint> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| format!("listing inherited descriptors: {e}"))?
        .filter_map(|d| d.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| (first..=last).contains(fd))
        .collect();
    for fd in listed {
        // SAFETY: closing a descriptor number of this process; nothing else uses it now.
        unsafe { libc::close(fd as RawFd) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helper_is_small_and_static() {
        assert_eq!(&PROGRAM[..4], b"\x7fELF");
        assert!(PROGRAM.len() < 64 * 1024, "{} bytes", PROGRAM.len());
    }

    #[test]
    fn the_copy_refuses_writes() {
        let fd = sealed().unwrap();
        assert_eq!(
            nix::unistd::write(&fd, b"x").unwrap_err(),
            nix::Error::EPERM
        );
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let reopened = std::fs::OpenOptions::new().write(true).open(&path);
        if let Ok(mut f) = reopened {
            use std::io::Write;
            assert!(f.write_all(b"x").is_err());
        }
        assert_eq!(std::fs::read(&path).unwrap(), PROGRAM);
    }
}
