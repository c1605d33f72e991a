//! The user's side of an attached session with a sandbox's monitor (`berth attach`,
//! `berth start -a`, `berth run --restart ...`): the sandbox's output to this terminal, this
//! terminal's input, size and signals to the sandbox, and the detach keys.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::monitor::proto;
use crate::term::{self, RawMode};

/// Docker's default detach keys: Ctrl-P Ctrl-Q.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// Parses Docker's detach-key syntax: comma-separated `ctrl-X` (X a letter or one of
/// `@[\]^_`) or single characters.
pub fn parse_detach_keys(s: &str) -> Result<Vec<u8>, String> {
    let bad =
        || format!("invalid detach keys {s:?}: use a comma-separated list like ctrl-p,ctrl-q");
    if s.is_empty() {
        return Ok(vec![]);
    }
    s.split(',')
        .map(|k| {
            let lower = k.to_ascii_lowercase();
            if let Some(c) = lower.strip_prefix("ctrl-") {
                let b = match c.as_bytes() {
                    [b] if b.is_ascii_lowercase() => b - b'a' + 1,
                    [b'@'] => 0,
                    [b'['] => 27,
                    [b'\\'] => 28,
                    [b']'] => 29,
                    [b'^'] => 30,
                    [b'_'] => 31,
                    _ => return Err(bad()),
                };
                Ok(b)
            } else if k.len() == 1 {
                Ok(k.as_bytes()[0])
            } else {
                Err(bad())
            }
        })
        .collect()
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The sandbox ended with this status.
    Exited(i32),
    /// The user typed the detach keys; the sandbox runs on.
    Detached,
    /// The monitor went away without a status (killed).
    Lost,
}

/// What the session relays.
pub struct SessionOptions {
    /// The sandbox has a terminal: raw mode here, window size there.
    pub tty: bool,
    /// Relay this process's stdin.
    pub stdin: bool,
    /// The sequence that detaches (empty: none).
    pub detach_keys: Vec<u8>,
    /// Without a terminal: pass SIGINT, SIGTERM and SIGHUP on to the sandbox.
    pub proxy_signals: bool,
    /// Sends a signal to the sandbox (through a second connection to its monitor).
    pub signal: Box<dyn Fn(i32)>,
}

/// Matches the detach sequence across reads; holds back a prefix until it is decided.
struct DetachMatcher {
    keys: Vec<u8>,
    held: usize,
}

impl DetachMatcher {
    /// Feeds input; returns the bytes to pass on and whether the sequence was completed.
    fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        if self.keys.is_empty() {
            out.extend_from_slice(input);
            return (out, false);
        }
        for &b in input {
            if b == self.keys[self.held] {
                self.held += 1;
                if self.held == self.keys.len() {
                    return (out, true);
                }
            } else {
                out.extend_from_slice(&self.keys[..self.held]);
                self.held = 0;
                if b == self.keys[0] {
                    self.held = 1;
                } else {
                    out.push(b);
                }
            }
        }
        (out, false)
    }
}

fn resize_frame(stream: &mut UnixStream) {
    if let Some(ws) = term::window_size(io::stdin().as_fd()) {
        let mut p = [0u8; 4];
        p[..2].copy_from_slice(&ws.ws_row.to_be_bytes());
        p[2..].copy_from_slice(&ws.ws_col.to_be_bytes());
        let _ = proto::write_frame(stream, proto::RESIZE, &p);
    }
}

/// Relays between this terminal and an attached monitor connection until the sandbox ends,
/// the user detaches, or the monitor goes away.
pub fn session(mut stream: UnixStream, opts: SessionOptions) -> io::Result<SessionEnd> {
    let stdin_is_tty = std::io::IsTerminal::is_terminal(&io::stdin());
    let mut sigs = SigSet::empty();
    sigs.add(Signal::SIGWINCH);
    if opts.proxy_signals && !opts.tty {
        for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            sigs.add(s);
        }
    }
    let mut old = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&sigs), Some(&mut old))?;
    let result = (|| {
        let sfd = SignalFd::with_flags(&sigs, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
        let _raw = (opts.tty && opts.stdin && stdin_is_tty).then(RawMode::enter);
        if opts.tty && stdin_is_tty {
            resize_frame(&mut stream);
        }
        let mut matcher = DetachMatcher {
            keys: if opts.stdin {
                opts.detach_keys.clone()
            } else {
                vec![]
            },
            held: 0,
        };
        let mut stdin_open = opts.stdin;
        let mut inbuf: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: stream.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: sfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: if stdin_open { 0 } else { -1 },
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: fds is a live array of pollfd for the duration of the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if fds[1].revents != 0 {
                while let Ok(Some(si)) = sfd.read_signal() {
                    match Signal::try_from(si.ssi_signo as i32) {
                        Ok(Signal::SIGWINCH) if opts.tty && stdin_is_tty => {
                            resize_frame(&mut stream)
                        }
                        Ok(Signal::SIGWINCH) => {}
                        Ok(s) => (opts.signal)(s as i32),
                        Err(_) => {}
                    }
                }
            }
            if fds[2].revents != 0 {
                match io::stdin().lock().read(&mut buf) {
                    Ok(0) | Err(_) => {
                        stdin_open = false;
                        let _ = proto::write_frame(&mut stream, proto::STDIN_EOF, b"");
                    }
                    Ok(k) => {
                        let (pass, detach) = matcher.feed(&buf[..k]);
                        if !pass.is_empty() {
                            for chunk in pass.chunks(proto::MAX_FRAME) {
                                let _ = proto::write_frame(&mut stream, proto::STDIN, chunk);
                            }
                        }
                        if detach {
                            return Ok(SessionEnd::Detached);
                        }
                    }
                }
            }
            if fds[0].revents != 0 {
                let k = match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return Ok(SessionEnd::Lost),
                    Ok(k) => k,
                };
                inbuf.extend_from_slice(&buf[..k]);
                while let Ok(Some((kind, range))) = proto::next_frame(&inbuf) {
                    let end = range.end;
                    let payload = &inbuf[range];
                    match kind {
                        proto::STDOUT => {
                            let mut out = io::stdout().lock();
                            let _ = out.write_all(payload);
                            let _ = out.flush();
                        }
                        proto::STDERR => {
                            let _ = io::stderr().lock().write_all(payload);
                        }
                        proto::EXIT => {
                            return Ok(proto::parse_exit(payload)
                                .map_or(SessionEnd::Lost, SessionEnd::Exited))
                        }
                        proto::ERROR => {
                            return Err(io::Error::other(
                                String::from_utf8_lossy(payload).into_owned(),
                            ))
                        }
                        _ => {}
                    }
                    inbuf.drain(..end);
                }
            }
        }
    })();
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_like_docker() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q"), Ok(vec![16, 17]));
        assert_eq!(parse_detach_keys("ctrl-a,x"), Ok(vec![1, b'x']));
        assert!(parse_detach_keys("ctrl-1").is_err());
        assert!(parse_detach_keys("abc").is_err());
    }

    #[test]
    fn detach_sequence_is_held_back_and_released() {
        let mut m = DetachMatcher {
            keys: vec![16, 17],
            held: 0,
        };
        assert_eq!(m.feed(b"ab\x10"), (b"ab".to_vec(), false));
        assert_eq!(m.feed(b"c"), (b"\x10c".to_vec(), false), "not the sequence");
        assert_eq!(m.feed(b"\x10"), (vec![], false));
        assert_eq!(m.feed(b"\x11rest"), (vec![], true));
        let mut m = DetachMatcher {
            keys: vec![16, 17],
            held: 0,
        };
        assert_eq!(m.feed(b"\x10\x10\x11"), (b"\x10".to_vec(), true));
    }
}
