//! The terminal side of `-t`: a pty pair, raw mode on the user's terminal (restored on drop),
//! and window-size propagation.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use nix::pty::{openpty, Winsize};
use nix::sys::termios::{self, SetArg, Termios};

/// A pty pair for the container: the master stays with berth, the slave becomes the
/// container's controlling terminal.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    pub slave_path: PathBuf,
}

nix::ioctl_read_bad!(get_winsize, libc::TIOCGWINSZ, Winsize);
nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, Winsize);

/// The window size of the terminal on `fd`, if it is one.
pub fn window_size(fd: BorrowedFd) -> Option<Winsize> {
    let mut ws = Winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one Winsize into the pointer we pass, which is valid.
    let ok = unsafe { get_winsize(fd.as_raw_fd(), &mut ws) }.is_ok();
    (ok && ws.ws_row > 0).then_some(ws)
}

/// Copies the window size of `from` (the user's terminal) to `to` (the pty master).
pub fn copy_window_size(from: BorrowedFd, to: BorrowedFd) {
    if let Some(ws) = window_size(from) {
        // SAFETY: TIOCSWINSZ reads one Winsize from a valid pointer.
        let _ = unsafe { set_winsize(to.as_raw_fd(), &ws) };
    }
}

impl Pty {
    /// Opens a pty sized like the terminal on stdin (or 24x80 when stdin is not a terminal).
    pub fn open() -> Result<Pty, String> {
        let stdin = std::io::stdin();
        let ws = window_size(stdin.as_fd()).unwrap_or(Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        });
        let p = openpty(Some(&ws), None).map_err(|e| format!("opening a pty: {e}"))?;
        let slave_path = std::fs::read_link(format!("/proc/self/fd/{}", p.slave.as_raw_fd()))
            .map_err(|e| format!("finding the pty's name: {e}"))?;
        for fd in [&p.master, &p.slave] {
            nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .map_err(|e| format!("pty: {e}"))?;
        }
        Ok(Pty { master: p.master, slave: p.slave, slave_path })
    }
}

/// Puts the user's terminal in raw mode while alive; restores it on drop.
pub struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    pub fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok();
        if let Some(orig) = &saved {
            let mut raw = orig.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        }
        RawMode { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(orig) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, orig);
        }
    }
}
