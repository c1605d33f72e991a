//! A pseudo-terminal to run `berth run -t` under, the way a terminal emulator
//! would: berth gets the slave as its controlling terminal and stdio; the test
//! reads and writes the master and can resize it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::{openpty, Winsize};
use nix::unistd::{Gid, Uid};

/// A process running on the slave side of a fresh pty.
pub struct PtySession {
    child: Child,
    master: File,
    output: Vec<u8>,
    eof: bool,
}

impl PtySession {
    /// Starts `cmd` on a new pty of `rows` x `cols`; the slave is handed to
    /// `owner` first when given, as login does, so a dropped-privilege berth
    /// can reopen it.
    pub fn spawn(mut cmd: Command, rows: u16, cols: u16, owner: Option<(u32, u32)>) -> Self {
        let size = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&size), None).expect("openpty");
        if let Some((uid, gid)) = owner {
            let path = std::fs::read_link(format!("/proc/self/fd/{}", pty.slave.as_raw_fd()))
                .expect("naming the pty slave");
            nix::unistd::chown(&path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .expect("chown of the pty slave");
        }
        let stdio = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup of the pty slave"));
        cmd.stdin(stdio(&pty.slave))
            .stdout(stdio(&pty.slave))
            .stderr(stdio(&pty.slave));
        // SAFETY: the closure runs between fork and exec and calls only
        // async-signal-safe functions (setsid, ioctl) on fds it owns.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawning under a pty");
        // The Command holds slave fds too: drop it so EOF arrives when the child is gone.
        drop(cmd);
        drop(pty.slave);
        PtySession {
            child,
            master: File::from(pty.master),
            output: Vec::new(),
            eof: false,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Types `text` into the terminal.
    pub fn write(&mut self, text: &str) {
        self.master
            .write_all(text.as_bytes())
            .expect("writing to the pty master");
    }

    /// Resizes the terminal; the kernel sends SIGWINCH to the foreground group.
    pub fn resize(&self, rows: u16, cols: u16) {
        let size = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer; the fd is our open master.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }

    /// Everything the terminal showed so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }

    /// Reads until the output (since the start) contains `needle`.
    pub fn expect(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.output().contains(needle) {
            if self.eof || !self.read_some(deadline) {
                panic!(
                    "pty: {needle:?} did not appear within {timeout:?}; output so far:\n{}",
                    self.output()
                );
            }
        }
    }

    /// Reads until the slave side is closed, then reaps the child.
    pub fn wait(mut self, timeout: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        while !self.eof {
            if !self.read_some(deadline) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "pty: the session did not end within {timeout:?}; output:\n{}",
                    self.output()
                );
            }
        }
        let status = self.child.wait().expect("waiting for the pty child");
        (status, self.output())
    }

    /// One read; false once the deadline passed.
    fn read_some(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => return Instant::now() < deadline,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return true,
            Err(e) => panic!("poll on the pty master: {e}"),
        }
        let mut buf = [0u8; 4096];
        match self.master.read(&mut buf) {
            Ok(0) => self.eof = true,
            Ok(n) => self.output.extend_from_slice(&buf[..n]),
            // EIO: every slave fd is closed, i.e. the session is over.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => self.eof = true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("reading the pty master: {e}"),
        }
        true
    }
}

impl Drop for PtySession {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
