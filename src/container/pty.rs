//! The terminal side of `-t`: a pty created inside the container's devpts (so `tty` says
//! /dev/pts/0), its master passed to berth over a socket, raw mode on the user's terminal
//! (restored on drop), and window-size propagation.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use nix::pty::Winsize;

pub use crate::term::{initial_size, window_size, RawMode};

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, Winsize);

/// Copies the window size of `from` (the user's terminal) to `to` (the pty master).
pub fn copy_window_size(from: BorrowedFd, to: BorrowedFd) {
    if let Some(ws) = window_size(from) {
        // SAFETY: TIOCSWINSZ reads one Winsize from a valid pointer.
        let _ = unsafe { set_winsize(to.as_raw_fd(), &ws) };
    }
}

/// Inside the container (after pivot_root): opens a pty in the container's own devpts, makes
/// its slave the controlling terminal and stdio, binds it to /dev/console, and returns the
/// master for the caller to hand to berth.
pub fn open_in_container(size: &Winsize) -> Result<OwnedFd, String> {
    open_pty(size, true)
}

/// The same for a process joining a running container (`berth exec -t`): the container's
/// /dev/console stays its first process's.
pub fn open_for_exec(size: &Winsize) -> Result<OwnedFd, String> {
    open_pty(size, false)
}

fn open_pty(size: &Winsize, console: bool) -> Result<OwnedFd, String> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| format!("opening /dev/ptmx in the container: {e}"))?;
    nix::pty::grantpt(&master).map_err(|e| format!("grantpt: {e}"))?;
    nix::pty::unlockpt(&master).map_err(|e| format!("unlockpt: {e}"))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| format!("ptsname: {e}"))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("opening {name}: {e}"))?;
    // SAFETY: TIOCSWINSZ reads one Winsize from a valid pointer; TIOCSCTTY takes an int.
    unsafe {
        let _ = set_winsize(slave, size);
        if libc::ioctl(slave, libc::TIOCSCTTY, 0) < 0 {
            return Err(format!(
                "making {name} the controlling terminal: {}",
                nix::Error::last()
            ));
        }
    }
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors from a descriptor we own.
        if unsafe { libc::dup2(slave, target) } < 0 {
            return Err(format!("dup2: {}", nix::Error::last()));
        }
    }
    let _ = nix::unistd::close(slave);
    if !console {
        // SAFETY: posix_openpt returned a fresh descriptor that nothing else owns.
        return Ok(unsafe { OwnedFd::from_raw_fd(master.into_raw_fd()) });
    }
    let console = std::path::Path::new("/dev/console");
    if std::fs::symlink_metadata(console).is_err() {
        let _ = std::fs::File::create(console);
    }
    nix::mount::mount(
        Some(name.as_str()),
        console,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("binding {name} to /dev/console: {e}"))?;
    // SAFETY: posix_openpt returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(master.into_raw_fd()) })
}

/// Sends a descriptor over a unix socket (SCM_RIGHTS).
pub fn send_fd(sock: BorrowedFd, fd: BorrowedFd) -> Result<(), String> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd.as_raw_fd()];
    let iov = [std::io::IoSlice::new(b"m")];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map(drop)
    .map_err(|e| format!("passing the terminal to berth: {e}"))
}

/// Receives a descriptor sent with `send_fd`; None when the sender went away first.
pub fn recv_fd(sock: BorrowedFd) -> Option<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us; we own it now.
                return Some(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    None
}
