//! The monitor's socket protocol, spoken by the monitor and by the berth commands that reach
//! a running sandbox (`attach`, `start -a`, `wait`, `stop`, `kill`).
//!
//! A client connects to the sandbox's socket and sends one request line:
//!
//! ```text
//! attach [i][o][e]    stream stdin (i), stdout (o), stderr (e) until the sandbox ends
//! wait                the exit status once the sandbox has ended
//! stop SECS           the stop signal now, SIGKILL after SECS seconds (saying KILLING
//!                     then); answers like wait
//! kill SIGNO          one signal; answers OK
//! ```
//!
//! Then both sides exchange frames: a kind byte, a big-endian u32 length, the payload.
//! Payloads are small (at most [`MAX_FRAME`] bytes); a frame over that ends the session.

use std::io::{self, Read, Write};

/// Client to monitor: bytes for the sandbox's stdin.
pub const STDIN: u8 = 0;
/// Monitor to client: bytes the sandbox wrote to stdout (or its terminal).
pub const STDOUT: u8 = 1;
/// Monitor to client: bytes the sandbox wrote to stderr.
pub const STDERR: u8 = 2;
/// Client to monitor: the client's stdin ended.
pub const STDIN_EOF: u8 = 3;
/// Client to monitor: the terminal's size, rows and columns as two big-endian u16.
pub const RESIZE: u8 = 4;
/// Monitor to client: the sandbox ended with this status (big-endian i32, 128+N for signal N).
pub const EXIT: u8 = 5;
/// Monitor to client: the request failed; the payload says why (UTF-8).
pub const ERROR: u8 = 6;
/// Monitor to client: the request was carried out.
pub const OK: u8 = 7;
/// Monitor to a `stop` client: the stop signal did not end the sandbox within the seconds
/// given, and SIGKILL goes now (the answer follows as for `wait`).
pub const KILLING: u8 = 8;

/// Largest payload of one frame.
pub const MAX_FRAME: usize = 64 * 1024;

/// Longest request line.
pub const MAX_REQUEST: usize = 64;

/// A client's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Attach {
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    Wait,
    Stop {
        secs: u32,
    },
    Kill {
        signal: i32,
    },
}

impl Request {
    /// Parses a request line (without its newline).
    pub fn parse(line: &str) -> Option<Request> {
        let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
        match verb {
            "attach" => Some(Request::Attach {
                stdin: arg.contains('i'),
                stdout: arg.contains('o'),
                stderr: arg.contains('e'),
            }),
            "wait" if arg.is_empty() => Some(Request::Wait),
            "stop" => arg.parse().ok().map(|secs| Request::Stop { secs }),
            "kill" => arg.parse().ok().map(|signal| Request::Kill { signal }),
            _ => None,
        }
    }

    /// The request line, with its newline.
    pub fn line(&self) -> String {
        match self {
            Request::Attach {
                stdin,
                stdout,
                stderr,
            } => {
                let mut s = String::from("attach ");
                for (on, c) in [(stdin, 'i'), (stdout, 'o'), (stderr, 'e')] {
                    if *on {
                        s.push(c);
                    }
                }
                s.push('\n');
                s
            }
            Request::Wait => "wait\n".into(),
            Request::Stop { secs } => format!("stop {secs}\n"),
            Request::Kill { signal } => format!("kill {signal}\n"),
        }
    }
}

/// The 5-byte header of a frame.
pub fn header(kind: u8, len: usize) -> [u8; 5] {
    let l = (len as u32).to_be_bytes();
    [kind, l[0], l[1], l[2], l[3]]
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(5 + payload.len());
    buf.extend_from_slice(&header(kind, payload.len()));
    buf.extend_from_slice(payload);
    w.write_all(&buf)
}

/// Reads one frame; `None` at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame larger than the protocol allows",
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((head[0], payload)))
}

/// A frame over [`MAX_FRAME`]: the peer does not speak this protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OversizedFrame;

// By hand rather than with thiserror: the monitor program is built from these files with std
// and libc alone (monitor/main.rs).
impl std::fmt::Display for OversizedFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a frame larger than the protocol allows")
    }
}

impl std::error::Error for OversizedFrame {}

/// Splits complete frames off the front of `buf`: (kind, payload range) of the first one,
/// or `None` when `buf` holds only part of one.
pub fn next_frame(buf: &[u8]) -> Result<Option<(u8, std::ops::Range<usize>)>, OversizedFrame> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_FRAME {
        return Err(OversizedFrame);
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    Ok(Some((buf[0], 5..5 + len)))
}

/// The exit-status payload.
pub fn exit_payload(code: i32) -> [u8; 4] {
    code.to_be_bytes()
}

/// Decodes an exit-status payload.
pub fn parse_exit(payload: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(payload.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::Attach {
                stdin: true,
                stdout: true,
                stderr: false,
            },
            Request::Wait,
            Request::Stop { secs: 10 },
            Request::Kill { signal: 9 },
        ] {
            let line = r.line();
            assert_eq!(Request::parse(line.trim_end()), Some(r), "{line}");
        }
        assert_eq!(Request::parse("reboot"), None);
        assert_eq!(Request::parse("stop soon"), None);
    }

    #[test]
    fn frames_split_at_their_boundaries() {
        let mut wire = Vec::new();
        write_frame(&mut wire, STDOUT, b"hello").unwrap();
        write_frame(&mut wire, EXIT, &exit_payload(3)).unwrap();
        assert_eq!(next_frame(&wire[..4]), Ok(None));
        let (kind, range) = next_frame(&wire).unwrap().unwrap();
        assert_eq!((kind, &wire[range.clone()]), (STDOUT, &b"hello"[..]));
        let rest = &wire[range.end..];
        let (kind, range) = next_frame(rest).unwrap().unwrap();
        assert_eq!(kind, EXIT);
        assert_eq!(parse_exit(&rest[range]), Some(3));
        let mut r = &wire[..];
        assert_eq!(read_frame(&mut r).unwrap().unwrap().1, b"hello");
        let mut huge = header(STDOUT, MAX_FRAME + 1).to_vec();
        huge.push(0);
        assert!(next_frame(&huge).is_err());
    }
}
