//! The framed protocol between berth (host) and the agent (guest) on one byte stream
//! (a virtio console port in the VM). Every frame is `kind: u8`, `len: u32 LE`, then `len`
//! bytes. Both sides treat the other as hostile: unknown kinds and oversized frames are
//! errors, never allocations of whatever size the peer claims.

use std::io::{Read, Write};

/// The largest payload either side accepts (a spec is well under this).
pub const MAX_FRAME: usize = 1 << 20;

/// What the host asks of the process that starts the session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StartOptions {
    /// Keep stdin open for the host's data (else the process gets /dev/null).
    pub stdin: bool,
    /// Initial terminal size when the spec asks for a terminal.
    pub rows: u16,
    pub cols: u16,
    /// Files for the guest root before the process starts (PID 1 only): `hostname`, `hosts`
    /// and `resolv.conf` (and with keep-id `passwd` and `group`) under /etc, the same ones the
    /// container wall bind-mounts.
    #[serde(default)]
    pub etc_files: Vec<(String, String)>,
    /// The guest's NIC set-up (PID 1 only); without it the guest has only loopback.
    #[serde(default)]
    pub network: Option<crate::net::GuestNetwork>,
    /// Exec sessions only: a job the agent does itself instead of running the spec's process.
    #[serde(default)]
    pub builtin: Option<Builtin>,
}

/// A job the agent does itself in an exec session, with [`crate::archive`]: the files of
/// `berth cp` and `berth commit`, which then need no tool in the image (`docker cp` needs
/// none either). Its stdin and stdout carry the tar stream, stderr the reason it failed; it
/// runs as root in the guest, as `docker cp` writes as root in a container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Builtin {
    /// Writes `path` (a path in the guest) as a tar stream on stdout; `follow`: a symlink
    /// given as the path is followed (`cp -L`).
    CopyOut { path: String, follow: bool },
    /// Extracts the tar stream on stdin at `dest`, by [`crate::archive::consume`]'s rules.
    CopyIn {
        dest: String,
        contents: bool,
        stream: bool,
        archive: bool,
        /// Refuse to replace a directory with a non-directory or the other way.
        #[serde(default)]
        keep_kinds: bool,
    },
    /// Writes the root's writable layer (the overlay's upper directory) as an OCI layer tar
    /// on stdout, without the paths in `skip`.
    Layer { skip: Vec<String> },
    /// Writes the guest's processes (but the agent, the job itself and the kernel's threads)
    /// on stdout, one [`GuestProcess`] in JSON per line (`berth top`).
    Processes,
}

/// One process of the guest, as [`Builtin::Processes`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GuestProcess {
    pub pid: i32,
    pub ppid: i32,
    pub uid: u32,
    /// User plus system CPU time, in milliseconds.
    pub cpu_ms: u64,
    /// The command line, or `[comm]` for a process without one.
    pub cmd: String,
}

/// One message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    // host -> guest
    /// The OCI runtime spec (config.json bytes) and the start options (JSON).
    Start {
        spec: Vec<u8>,
        options: StartOptions,
    },
    Stdin(Vec<u8>),
    StdinEof,
    Resize {
        rows: u16,
        cols: u16,
    },
    Signal(i32),
    /// The guest's /etc/hosts anew (peers on a user-defined network came or went).
    Hosts(Vec<u8>),
    // guest -> host
    /// The agent is up; `boot_us` is the guest's monotonic time at that moment.
    Ready {
        boot_us: u64,
    },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The process ended: exit status, or 128+N for signal N.
    Exit(i32),
    /// The process could not be started; `code` is Docker's (125/126/127).
    Error {
        code: i32,
        message: String,
    },
    /// The process runs (sent once, after its Start).
    Started,
    // both ways
    /// A frame of exec session `id` (`berth exec`: another process in the running guest,
    /// opened by a Start in such a frame). The frames without this envelope belong to the
    /// session the VM was booted for. One channel carries every session: a virtio console
    /// port per exec would need the multiport device's control queue and ports that come and
    /// go, where 4 bytes of session id per frame need nothing new from the device or the
    /// guest kernel. Never nested.
    Session {
        id: u32,
        frame: Box<Frame>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("channel closed")]
    Closed,
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("malformed {kind} frame: {why}")]
    Malformed { kind: &'static str, why: String },
    #[error("channel i/o: {0}")]
    Io(#[from] std::io::Error),
}

const START: u8 = 1;
const STDIN: u8 = 2;
const STDIN_EOF: u8 = 3;
const RESIZE: u8 = 4;
const SIGNAL: u8 = 5;
const HOSTS: u8 = 6;
const READY: u8 = 10;
const STDOUT: u8 = 11;
const STDERR: u8 = 12;
const EXIT: u8 = 13;
const ERROR: u8 = 14;
const STARTED: u8 = 15;
const SESSION: u8 = 20;

impl Frame {
    /// Serialises the frame.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, Vec<u8>) = match self {
            Frame::Start { spec, options } => {
                let opts = serde_json::to_vec(options).unwrap_or_default();
                let mut p = (spec.len() as u32).to_le_bytes().to_vec();
                p.extend_from_slice(spec);
                p.extend_from_slice(&opts);
                (START, p)
            }
            Frame::Stdin(d) => (STDIN, d.clone()),
            Frame::StdinEof => (STDIN_EOF, vec![]),
            Frame::Resize { rows, cols } => {
                let mut p = rows.to_le_bytes().to_vec();
                p.extend_from_slice(&cols.to_le_bytes());
                (RESIZE, p)
            }
            Frame::Signal(s) => (SIGNAL, s.to_le_bytes().to_vec()),
            Frame::Hosts(d) => (HOSTS, d.clone()),
            Frame::Ready { boot_us } => (READY, boot_us.to_le_bytes().to_vec()),
            Frame::Stdout(d) => (STDOUT, d.clone()),
            Frame::Stderr(d) => (STDERR, d.clone()),
            Frame::Exit(c) => (EXIT, c.to_le_bytes().to_vec()),
            Frame::Error { code, message } => {
                let mut p = code.to_le_bytes().to_vec();
                p.extend_from_slice(message.as_bytes());
                (ERROR, p)
            }
            Frame::Started => (STARTED, vec![]),
            Frame::Session { id, frame } => {
                let mut p = id.to_le_bytes().to_vec();
                p.extend_from_slice(&frame.encode());
                (SESSION, p)
            }
        };
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(kind);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    fn decode(kind: u8, p: Vec<u8>) -> Result<Frame, ProtocolError> {
        let fixed = |name: &'static str, n: usize| -> Result<(), ProtocolError> {
            if p.len() == n {
                Ok(())
            } else {
                Err(ProtocolError::Malformed {
                    kind: name,
                    why: format!("{} bytes, expected {n}", p.len()),
                })
            }
        };
        Ok(match kind {
            START => {
                let bad = |why: &str| ProtocolError::Malformed {
                    kind: "start",
                    why: why.to_string(),
                };
                let n = u32::from_le_bytes(
                    p.get(..4)
                        .ok_or_else(|| bad("short"))?
                        .try_into()
                        .map_err(|_| bad("short"))?,
                ) as usize;
                let spec = p
                    .get(4..4 + n)
                    .ok_or_else(|| bad("spec length past the end"))?
                    .to_vec();
                let options =
                    serde_json::from_slice(&p[4 + n..]).map_err(|e| bad(&e.to_string()))?;
                Frame::Start { spec, options }
            }
            STDIN => Frame::Stdin(p),
            STDIN_EOF => {
                fixed("stdin-eof", 0)?;
                Frame::StdinEof
            }
            RESIZE => {
                fixed("resize", 4)?;
                Frame::Resize {
                    rows: u16::from_le_bytes([p[0], p[1]]),
                    cols: u16::from_le_bytes([p[2], p[3]]),
                }
            }
            SIGNAL => {
                fixed("signal", 4)?;
                Frame::Signal(i32::from_le_bytes([p[0], p[1], p[2], p[3]]))
            }
            HOSTS => Frame::Hosts(p),
            READY => {
                fixed("ready", 8)?;
                Frame::Ready {
                    boot_us: u64::from_le_bytes(p[..8].try_into().expect("length checked")),
                }
            }
            STDOUT => Frame::Stdout(p),
            STDERR => Frame::Stderr(p),
            EXIT => {
                fixed("exit", 4)?;
                Frame::Exit(i32::from_le_bytes([p[0], p[1], p[2], p[3]]))
            }
            ERROR => {
                if p.len() < 4 {
                    return Err(ProtocolError::Malformed {
                        kind: "error",
                        why: "short".into(),
                    });
                }
                Frame::Error {
                    code: i32::from_le_bytes([p[0], p[1], p[2], p[3]]),
                    message: String::from_utf8_lossy(&p[4..]).into_owned(),
                }
            }
            STARTED => {
                fixed("started", 0)?;
                Frame::Started
            }
            SESSION => {
                let bad = |why: String| ProtocolError::Malformed {
                    kind: "session",
                    why,
                };
                if p.len() < 9 {
                    return Err(bad(format!("{} bytes, expected at least 9", p.len())));
                }
                let id = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
                let inner_kind = p[4];
                let len = u32::from_le_bytes([p[5], p[6], p[7], p[8]]) as usize;
                if inner_kind == SESSION {
                    return Err(bad("a session frame inside another".into()));
                }
                if len != p.len() - 9 {
                    return Err(bad(format!(
                        "inner frame of {len} bytes in {} bytes",
                        p.len() - 9
                    )));
                }
                let frame = Frame::decode(inner_kind, p[9..].to_vec())?;
                Frame::Session {
                    id,
                    frame: Box::new(frame),
                }
            }
            other => return Err(ProtocolError::UnknownKind(other)),
        })
    }

    /// Writes the frame in one call.
    pub fn write_to(&self, w: &mut impl Write) -> Result<(), ProtocolError> {
        w.write_all(&self.encode())?;
        w.flush()?;
        Ok(())
    }

    /// Reads one frame (blocking).
    pub fn read_from(r: &mut impl Read) -> Result<Frame, ProtocolError> {
        let mut head = [0u8; 5];
        match r.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(ProtocolError::Closed)
            }
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX_FRAME {
            return Err(ProtocolError::TooLarge(len));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => ProtocolError::Closed,
            _ => e.into(),
        })?;
        Frame::decode(head[0], payload)
    }
}

/// Incremental decoder for a non-blocking stream: feed bytes, take whole frames.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ProtocolError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(ProtocolError::TooLarge(len));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let kind = self.buf[0];
        let payload = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        Frame::decode(kind, payload).map(Some)
    }
}

/// Fuzz harness for what a hostile peer sends (the host reads what a guest writes): `data` as
/// a byte stream, fed to the incremental [`Decoder`] in chunks whose sizes the input picks and
/// read whole by [`Frame::read_from`]; every frame that decodes must encode and decode to
/// itself. Run by the unit tests below over seeded inputs and by `fuzz/` under libFuzzer.
pub fn fuzz_frames(data: &[u8]) {
    let (sizes, stream) = data.split_at(data.len().min(8));
    let mut decoder = Decoder::default();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let n = (usize::from(sizes.get(i % sizes.len().max(1)).copied().unwrap_or(1)) + 1)
            .min(rest.len());
        decoder.feed(&rest[..n]);
        rest = &rest[n..];
        i += 1;
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => round_trip(&frame),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let mut cursor = std::io::Cursor::new(stream);
    while let Ok(frame) = Frame::read_from(&mut cursor) {
        round_trip(&frame);
    }
}

fn round_trip(frame: &Frame) {
    let bytes = frame.encode();
    let again = Frame::read_from(&mut std::io::Cursor::new(&bytes))
        .expect("a frame that decoded encodes to one that decodes");
    assert_eq!(&again, frame);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Frame> {
        vec![
            Frame::Start {
                spec: b"{\"ociVersion\":\"1.2.0\"}".to_vec(),
                options: StartOptions {
                    stdin: true,
                    rows: 24,
                    cols: 80,
                    etc_files: vec![("hostname".into(), "h\n".into())],
                    network: Some(crate::net::GuestNetwork {
                        interface: "eth0".into(),
                        address: std::net::Ipv4Addr::new(10, 0, 2, 100),
                        prefix_len: 24,
                        gateway: std::net::Ipv4Addr::new(10, 0, 2, 2),
                        tcp_window: Some(96 << 10),
                    }),
                    builtin: Some(Builtin::CopyIn {
                        dest: "/tmp".into(),
                        contents: false,
                        stream: true,
                        archive: false,
                        keep_kinds: false,
                    }),
                },
            },
            Frame::Stdin(b"hello".to_vec()),
            Frame::StdinEof,
            Frame::Resize {
                rows: 50,
                cols: 132,
            },
            Frame::Signal(15),
            Frame::Hosts(b"127.0.0.1\tlocalhost\n10.89.0.3\tdb\n".to_vec()),
            Frame::Ready { boot_us: 123_456 },
            Frame::Stdout(vec![0, 1, 2]),
            Frame::Stderr(b"oops".to_vec()),
            Frame::Exit(137),
            Frame::Error {
                code: 127,
                message: "exec: \"x\": executable file not found in $PATH".into(),
            },
            Frame::Started,
            Frame::Session {
                id: 7,
                frame: Box::new(Frame::Stdout(b"from an exec".to_vec())),
            },
            Frame::Session {
                id: u32::MAX,
                frame: Box::new(Frame::Exit(3)),
            },
        ]
    }

    #[test]
    fn every_frame_round_trips_whole_and_byte_by_byte() {
        let mut stream = Vec::new();
        for f in all() {
            stream.extend(f.encode());
        }
        let mut r = std::io::Cursor::new(stream.clone());
        for f in all() {
            assert_eq!(Frame::read_from(&mut r).unwrap(), f);
        }
        assert!(matches!(
            Frame::read_from(&mut r),
            Err(ProtocolError::Closed)
        ));
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for b in stream {
            d.feed(&[b]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, all());
    }

    /// A frame of `kind` around `payload`, however wrong the payload.
    fn framed(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![kind];
        f.extend((payload.len() as u32).to_le_bytes());
        f.extend(payload);
        f
    }

    #[test]
    fn hostile_frames_are_refused() {
        let huge = [STDOUT, 0xff, 0xff, 0xff, 0x7f];
        assert!(matches!(
            Frame::read_from(&mut &huge[..]),
            Err(ProtocolError::TooLarge(_))
        ));
        let mut d = Decoder::default();
        d.feed(&huge);
        assert!(matches!(d.next_frame(), Err(ProtocolError::TooLarge(_))));
        assert!(matches!(
            Frame::read_from(&mut &[99u8, 0, 0, 0, 0][..]),
            Err(ProtocolError::UnknownKind(99))
        ));
        assert!(matches!(
            Frame::read_from(&mut &[EXIT, 2, 0, 0, 0, 1, 2][..]),
            Err(ProtocolError::Malformed { .. })
        ));
        // A start frame whose inner spec length points past the end.
        let mut p = 1000u32.to_le_bytes().to_vec();
        p.extend_from_slice(b"{}");
        assert!(matches!(
            Frame::read_from(&mut &framed(START, &p)[..]),
            Err(ProtocolError::Malformed { .. })
        ));
        // A session frame inside another, and one whose inner length lies.
        let inner = Frame::Session {
            id: 1,
            frame: Box::new(Frame::StdinEof),
        }
        .encode();
        let mut p = 2u32.to_le_bytes().to_vec();
        p.extend_from_slice(&inner);
        assert!(matches!(
            Frame::read_from(&mut &framed(SESSION, &p)[..]),
            Err(ProtocolError::Malformed { .. })
        ));
        let mut p = 2u32.to_le_bytes().to_vec();
        p.extend_from_slice(&[STDIN, 9, 0, 0, 0, 1]);
        assert!(matches!(
            Frame::read_from(&mut &framed(SESSION, &p)[..]),
            Err(ProtocolError::Malformed { .. })
        ));
        // Truncated payload.
        assert!(matches!(
            Frame::read_from(&mut &[STDIN, 4, 0, 0, 0, 1][..]),
            Err(ProtocolError::Closed)
        ));
    }

    /// xorshift64*: deterministic inputs, so a failure reproduces. `BERTH_FUZZ_ROUNDS`
    /// multiplies the count (a long run: `BERTH_FUZZ_ROUNDS=2000 cargo test --release fuzz`).
    fn inputs(seed: u64, count: usize) -> impl Iterator<Item = Vec<u8>> {
        let rounds: usize = std::env::var("BERTH_FUZZ_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let mut s = seed;
        let mut next = move || {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            s.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let valid: Vec<Vec<u8>> = all().iter().map(Frame::encode).collect();
        (0..count * rounds).map(move |i| {
            // Half the inputs start from valid frames with bytes changed; half are noise
            // whose header lengths are kept small enough to complete.
            let mut v: Vec<u8> = (0..8).map(|_| next() as u8).collect();
            if i % 2 == 0 {
                for _ in 0..1 + next() % 4 {
                    v.extend_from_slice(&valid[next() as usize % valid.len()]);
                }
                let len = v.len();
                for _ in 0..1 + next() % 6 {
                    let at = 8 + next() as usize % (len - 8);
                    v[at] = next() as u8;
                }
            } else {
                for _ in 0..1 + next() % 4 {
                    let len = next() as usize % 300;
                    v.push(next() as u8 % 16);
                    v.extend_from_slice(&(len as u32).to_le_bytes());
                    v.extend((0..len).map(|_| next() as u8));
                }
            }
            v
        })
    }

    #[test]
    fn fuzz_random_and_mutated_frames() {
        for data in inputs(11, 3000) {
            fuzz_frames(&data);
        }
    }
}
