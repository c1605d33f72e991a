//! The user's terminal: its window size and raw mode, for `-t` sessions of either wall.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::pty::Winsize;
use nix::sys::termios::{self, SetArg, Termios};

nix::ioctl_read_bad!(get_winsize, libc::TIOCGWINSZ, Winsize);

/// The window size of the terminal on `fd`, if it is one.
pub fn window_size(fd: BorrowedFd) -> Option<Winsize> {
    let mut ws = Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one Winsize into the pointer we pass, which is valid.
    let ok = unsafe { get_winsize(fd.as_raw_fd(), &mut ws) }.is_ok();
    (ok && ws.ws_row > 0).then_some(ws)
}

/// The size for a new sandbox terminal: the user's terminal's, or 24x80.
pub fn initial_size() -> Winsize {
    window_size(std::io::stdin().as_fd()).unwrap_or(Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    })
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
