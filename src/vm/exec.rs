//! `berth exec` in a running microVM: the VMM's exec socket, and the client that talks to it.
//!
//! The VMM of a detached microVM listens on a UNIX socket in the sandbox's runtime directory.
//! A client speaks the agent's own protocol there, as if the socket were the agent channel:
//! a Start (the process's spec and options), then Stdin, StdinEof, Resize and Signal; it
//! gets Started or Error, then Stdout, Stderr and Exit. The VMM gives each connection a
//! session id and carries its frames over the one agent channel in [`Frame::Session`]
//! envelopes (that frame's doc says why one channel); the agent runs the process beside the
//! sandbox's own.
//!
//! The guest is hostile: what it sends in an envelope is checked like any frame of its, and a
//! client that stops reading is dropped rather than let stall the channel every session shares.
//! A client that goes away leaves its process running, unheard (as `docker exec` does).

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_agent::protocol::{Builtin, Frame, ProtocolError, StartOptions};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::sandbox::{SandboxError, FORWARDED};
use crate::term::{self, RawMode};

/// The most exec sessions one microVM serves at once (the agent has the same bound).
const MAX_SESSIONS: usize = 64;
/// How long a client may leave the VMM's output to it unread before it is dropped.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The write half of the agent channel, shared by every thread that sends on it: a frame is
/// written whole under the lock, so frames of different sessions never interleave.
pub(super) type Channel = Arc<Mutex<UnixStream>>;

/// Sends `frame` on the agent channel.
pub(super) fn send(chan: &Channel, frame: &Frame) -> Result<(), ProtocolError> {
    let mut c = chan.lock().unwrap_or_else(|e| e.into_inner());
    frame.write_to(&mut *c)
}

/// The open exec sessions: their clients by session id.
#[derive(Clone, Default)]
pub(super) struct Sessions(Arc<Mutex<HashMap<u32, UnixStream>>>);

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, UnixStream>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a frame the guest sent in session `id`'s envelope to its client; frames of a
    /// session without a client (it left, or never was) are dropped. A frame the agent never
    /// sends in a session breaks the protocol.
    pub(super) fn deliver(&self, id: u32, frame: Frame) -> Result<(), ProtocolError> {
        let end = match &frame {
            Frame::Exit(_) | Frame::Error { .. } => true,
            Frame::Started | Frame::Stdout(_) | Frame::Stderr(_) => false,
            other => {
                return Err(ProtocolError::Malformed {
                    kind: "session",
                    why: format!("unexpected {other:?} from the guest in session {id}"),
                })
            }
        };
        let mut clients = self.lock();
        let Some(client) = clients.get_mut(&id) else {
            return Ok(());
        };
        if frame.write_to(client).is_err() || end {
            if let Some(c) = clients.remove(&id) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
        Ok(())
    }
}

/// Takes exec clients on `listener` from now on (the sandbox's own process runs: the agent
/// takes sessions), each in a thread of its own that forwards its frames to the channel.
pub(super) fn serve(listener: UnixListener, chan: Channel, sessions: Sessions) -> io::Result<()> {
    let next = Arc::new(AtomicU32::new(1));
    std::thread::Builder::new()
        .name("exec-accept".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                if sessions.lock().len() >= MAX_SESSIONS {
                    let _ = Frame::Error {
                        code: 125,
                        message: format!(
                            "{MAX_SESSIONS} exec sessions run in this microVM already: wait for one to end"
                        ),
                    }
                    .write_to(&mut stream);
                    continue;
                }
                let id = next.fetch_add(1, Ordering::Relaxed);
                let (chan, sessions) = (chan.clone(), sessions.clone());
                let _ = std::thread::Builder::new()
                    .name("exec-client".into())
                    .spawn(move || client(stream, id, &chan, &sessions));
            }
        })?;
    Ok(())
}

/// One exec client: its Start opens session `id`; its later frames go to that session's
/// process until it leaves.
fn client(mut stream: UnixStream, id: u32, chan: &Channel, sessions: &Sessions) {
    let refuse = |stream: &mut UnixStream, message: &str| {
        let _ = Frame::Error {
            code: 125,
            message: message.into(),
        }
        .write_to(stream);
    };
    let start = match Frame::read_from(&mut stream) {
        Ok(f @ Frame::Start { .. }) => f,
        Ok(_) => return refuse(&mut stream, "an exec session begins with a Start frame"),
        Err(_) => return,
    };
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    let _ = writer.set_write_timeout(Some(CLIENT_WRITE_TIMEOUT));
    sessions.lock().insert(id, writer);
    let forward = |frame: Frame| {
        send(
            chan,
            &Frame::Session {
                id,
                frame: Box::new(frame),
            },
        )
    };
    if forward(start).is_err() {
        refuse(&mut stream, "the microVM's agent channel is closed");
        sessions.lock().remove(&id);
        return;
    }
    // Anything but input is not the client's to send; a closed client has left.
    while let Ok(
        f @ (Frame::Stdin(_) | Frame::StdinEof | Frame::Resize { .. } | Frame::Signal(_)),
    ) = Frame::read_from(&mut stream)
    {
        if forward(f).is_err() {
            break;
        }
    }
    sessions.lock().remove(&id);
}

/// What a `berth exec` client asks of the running microVM.
#[derive(Debug)]
pub struct ExecSession {
    /// The runtime spec whose process to run (the sandbox's own, with the exec's process).
    pub spec: Vec<u8>,
    pub tty: bool,
    /// `-i`: this process's stdin goes to the process.
    pub stdin: bool,
    /// `-d`: returns once the process runs.
    pub detach: bool,
}

/// Runs `session` through the VMM's exec socket (`stream`, connected): this process's stdio
/// becomes the process's. Returns the exit status (128+N for signal N), 0 at once with
/// `detach`.
pub fn exec(mut stream: UnixStream, session: ExecSession) -> Result<i32, SandboxError> {
    let size = term::initial_size();
    Frame::Start {
        spec: session.spec,
        options: StartOptions {
            stdin: session.stdin,
            rows: size.ws_row,
            cols: size.ws_col,
            etc_files: vec![],
            network: None,
            builtin: None,
        },
    }
    .write_to(&mut stream)?;
    started(&mut stream)?;
    if session.detach {
        return Ok(0);
    }
    let stdin = io::stdin();
    let raw =
        (session.tty && session.stdin && nix::unistd::isatty(stdin.as_raw_fd()).unwrap_or(false))
            .then(RawMode::enter);

    // Input, signals and resizes go from a thread of their own; this one prints the output.
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(*s);
    }
    mask.add(Signal::SIGWINCH);
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(SandboxError::Signals)?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC).map_err(SandboxError::Signals)?;
    let mut writer = stream.try_clone().map_err(SandboxError::Channel)?;
    let with_stdin = session.stdin;
    std::thread::Builder::new()
        .name("exec-input".into())
        .spawn(move || forward_input(&mut writer, &sfd, with_stdin))
        .map_err(SandboxError::Channel)?;

    let (mut out, mut err) = (io::stdout(), io::stderr());
    let code = loop {
        match Frame::read_from(&mut stream) {
            Ok(Frame::Stdout(d)) => {
                let _ = out.write_all(&d).and_then(|()| out.flush());
            }
            Ok(Frame::Stderr(d)) => {
                let _ = err.write_all(&d).and_then(|()| err.flush());
            }
            Ok(Frame::Exit(code)) => break code,
            Ok(other) => return Err(unexpected(&other, "while the process runs")),
            Err(ProtocolError::Closed) => return Err(SandboxError::ExecLost),
            Err(e) => return Err(e.into()),
        }
    };
    drop(raw);
    Ok(code)
}

/// The agent's answer to a session's Start: Started, or why it could not start.
fn started(stream: &mut UnixStream) -> Result<(), SandboxError> {
    match Frame::read_from(stream) {
        Ok(Frame::Started) => Ok(()),
        Ok(Frame::Error { code, message }) => Err(SandboxError::Start { code, message }),
        Ok(other) => Err(unexpected(&other, "before the session started")),
        Err(ProtocolError::Closed) => Err(SandboxError::ExecLost),
        Err(e) => Err(e.into()),
    }
}

/// The most of a failed job's stderr kept for its error message.
const MAX_JOB_ERROR: usize = 16 << 10;

/// Runs one of the agent's own jobs ([`Builtin`]: `berth cp`, `berth commit`) in the running
/// microVM behind `stream` (its VMM's exec socket, connected): `input`, if any, goes to the
/// job's stdin, its stdout to `output`. `spec` is the sandbox's runtime spec (the agent reads
/// a session's spec before it looks at the job). Fails with what the job said on stderr.
pub fn builtin(
    mut stream: UnixStream,
    spec: Vec<u8>,
    job: Builtin,
    input: Option<&mut (dyn io::Read + Send)>,
    output: &mut dyn Write,
) -> Result<(), SandboxError> {
    Frame::Start {
        spec,
        options: StartOptions {
            stdin: input.is_some(),
            rows: 0,
            cols: 0,
            etc_files: vec![],
            network: None,
            builtin: Some(job),
        },
    }
    .write_to(&mut stream)?;
    started(&mut stream)?;
    let mut writer = stream.try_clone().map_err(SandboxError::Channel)?;
    std::thread::scope(|scope| {
        if let Some(input) = input {
            scope.spawn(move || {
                let mut buf = vec![0u8; 256 << 10];
                loop {
                    let frame = match input.read(&mut buf) {
                        Ok(0) | Err(_) => Frame::StdinEof,
                        Ok(n) => Frame::Stdin(buf[..n].to_vec()),
                    };
                    let end = frame == Frame::StdinEof;
                    if frame.write_to(&mut writer).is_err() || end {
                        return;
                    }
                }
            });
        }
        let mut said = Vec::new();
        loop {
            match Frame::read_from(&mut stream) {
                Ok(Frame::Stdout(d)) => {
                    if let Err(e) = output.write_all(&d) {
                        // The job goes on writing into a session nobody reads; the VMM
                        // drops its frames once this side is gone.
                        let _ = stream.shutdown(std::net::Shutdown::Both);
                        return Err(SandboxError::Channel(e));
                    }
                }
                Ok(Frame::Stderr(d)) => {
                    let room = MAX_JOB_ERROR.saturating_sub(said.len());
                    said.extend_from_slice(&d[..d.len().min(room)]);
                }
                Ok(Frame::Exit(0)) => return output.flush().map_err(SandboxError::Channel),
                Ok(Frame::Exit(code)) => {
                    let text = String::from_utf8_lossy(&said);
                    let message = printable(text.trim());
                    return Err(SandboxError::Start {
                        code,
                        message: if message.is_empty() {
                            format!("the agent's job ended with status {code}")
                        } else {
                            message
                        },
                    });
                }
                Ok(other) => return Err(unexpected(&other, "while the job runs")),
                Err(ProtocolError::Closed) => return Err(SandboxError::ExecLost),
                Err(e) => return Err(e.into()),
            }
        }
    })
}

/// Sends this process's stdin (with `stdin`), the forwarded signals and the terminal's new
/// sizes to the session, until the session or stdin's reader is gone.
fn forward_input(chan: &mut UnixStream, sfd: &SignalFd, stdin: bool) {
    let input = io::stdin();
    let mut stdin_open = stdin;
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if stdin_open {
            fds.push(PollFd::new(input.as_fd(), PollFlags::POLLIN));
        }
        if nix::poll::poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        let (sig, data) = (ready(&fds[0]), fds.get(1).is_some_and(ready));
        drop(fds);
        let mut frames = Vec::new();
        if sig {
            if let Ok(Some(si)) = sfd.read_signal() {
                match Signal::try_from(si.ssi_signo as i32) {
                    Ok(Signal::SIGWINCH) => {
                        if let Some(ws) = term::window_size(input.as_fd()) {
                            frames.push(Frame::Resize {
                                rows: ws.ws_row,
                                cols: ws.ws_col,
                            });
                        }
                    }
                    Ok(s) => frames.push(Frame::Signal(s as i32)),
                    Err(_) => {}
                }
            }
        }
        if data {
            match nix::unistd::read(input.as_raw_fd(), &mut buf) {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    frames.push(Frame::StdinEof);
                }
                Ok(n) => frames.push(Frame::Stdin(buf[..n].to_vec())),
            }
        }
        for f in frames {
            if f.write_to(chan).is_err() {
                return;
            }
        }
    }
}

/// What the guest wrote, fit for the user's terminal: no control characters but newlines
/// and tabs (a hostile guest could otherwise send escape sequences).
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// A frame the agent had no business sending at this point of an exec session.
fn unexpected(frame: &Frame, when: &str) -> SandboxError {
    ProtocolError::Malformed {
        kind: "exec",
        why: format!("unexpected {frame:?} {when}"),
    }
    .into()
}
