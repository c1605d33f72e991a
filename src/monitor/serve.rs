//! The monitor's steady state, in the small `berth-monitor` process: one poll loop over the
//! sandbox's output, its exit report, the socket and its clients, and the stop timer.
//! It allocates only for client buffers and touches little memory: its footprint is paid once
//! per running sandbox.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use super::log::{LogWriter, Stream};
use super::proto::{self, Request};

/// How many clients may be connected at once; more wait in the listen backlog.
const MAX_CLIENTS: usize = 64;
/// A client that lets this much output pile up unread is disconnected (the sandbox never waits
/// for a slow reader).
const MAX_CLIENT_BACKLOG: usize = 1 << 20;
/// Stdin bytes held for a sandbox that does not read them; the client waits meanwhile.
const MAX_STDIN_BACKLOG: usize = 64 * 1024;

/// The sandbox the monitor owns: what it signals and how it learns of the end. A microVM's
/// VMM takes the place of a container's `init` (the monitor's child, whose wait status is
/// the sandbox's; it passes signals on to the guest's process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sandbox {
    /// A container whose first process, `init`, is either the monitor's own child (its wait
    /// status is the container's), or, with `stage1` (then the monitor's child), is waited
    /// for by stage 1, which reports the end on the pipe `stage1.1` as `exit N` or
    /// `signal N` (the fuse-overlayfs driver keeps its daemon in stage 1).
    Container {
        init: i32,
        stage1: Option<(i32, RawFd)>,
    },
}

/// Where the sandbox's output comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Two pipes, kept apart in the log and for clients.
    Pipes { stdout: RawFd, stderr: RawFd },
    /// The master of the sandbox's terminal (`-t`): one stream, logged as stdout.
    Terminal { master: RawFd },
}

/// Everything the monitor is handed, on its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub id: String,
    /// The berth binary, run (as `berth __exited`) once the sandbox has ended.
    pub berth: PathBuf,
    pub sandbox: Sandbox,
    pub output: Output,
    /// With `-i` and no terminal: the write end of the sandbox's stdin.
    pub stdin: Option<RawFd>,
    /// With `-i` and a terminal: clients' input goes to the terminal.
    pub terminal_stdin: bool,
    /// The listening socket.
    pub listener: RawFd,
    /// Clients connected before the sandbox started (`start -a`, `run` through the monitor).
    pub clients: Vec<(RawFd, Request)>,
    /// The log file and its bounds.
    pub log: PathBuf,
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// What `stop` sends first.
    pub stop_signal: i32,
}

fn fd_arg(v: &OsStr) -> Result<RawFd, String> {
    v.to_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not a descriptor number: {v:?}"))
}

fn num_arg<T: std::str::FromStr>(v: &OsStr) -> Result<T, String> {
    v.to_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not a number: {v:?}"))
}

impl Config {
    /// The command line that [`Config::parse`] reads back.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut put = |k: &str, v: OsString| {
            a.push(k.into());
            a.push(v);
        };
        put("--id", self.id.clone().into());
        put("--berth", self.berth.clone().into());
        match &self.sandbox {
            Sandbox::Container { init, stage1 } => {
                let (pid, status) = stage1.unwrap_or((-1, -1));
                put("--container", format!("{init},{pid},{status}").into())
            }
        }
        match &self.output {
            Output::Pipes { stdout, stderr } => put("--pipes", format!("{stdout},{stderr}").into()),
            Output::Terminal { master } => put("--terminal", master.to_string().into()),
        }
        if let Some(fd) = self.stdin {
            put("--stdin", fd.to_string().into());
        }
        if self.terminal_stdin {
            put("--terminal-stdin", "1".into());
        }
        put("--listen", self.listener.to_string().into());
        for (fd, req) in &self.clients {
            put(
                "--client",
                format!("{fd}:{}", req.line().trim_end().replace(' ', "+")).into(),
            );
        }
        put("--log", self.log.clone().into());
        put("--log-max-size", self.log_max_size.to_string().into());
        put("--log-max-files", self.log_max_files.to_string().into());
        put("--stop-signal", self.stop_signal.to_string().into());
        a
    }

    /// Reads the monitor's command line.
    pub fn parse(args: &[OsString]) -> Result<Config, String> {
        let mut id = None;
        let mut berth = None;
        let mut sandbox = None;
        let mut output = None;
        let mut stdin = None;
        let mut terminal_stdin = false;
        let mut listener = None;
        let mut clients = Vec::new();
        let mut log = None;
        let mut log_max_size = super::log::DEFAULT_MAX_SIZE;
        let mut log_max_files = super::log::DEFAULT_MAX_FILES;
        let mut stop_signal = libc::SIGTERM;
        let mut it = args.iter();
        while let Some(key) = it.next() {
            let value = it.next().ok_or_else(|| format!("{key:?} needs a value"))?;
            let text = value.to_string_lossy();
            let fds = |n: usize| -> Result<Vec<RawFd>, String> {
                let v: Vec<RawFd> = text.split(',').filter_map(|s| s.parse().ok()).collect();
                (v.len() == n)
                    .then_some(v)
                    .ok_or_else(|| format!("{key:?} needs {n} numbers, got {text:?}"))
            };
            match key.to_str().unwrap_or("") {
                "--id" => id = Some(text.into_owned()),
                "--berth" => berth = Some(PathBuf::from(value)),
                "--container" => {
                    let v = fds(3)?;
                    sandbox = Some(Sandbox::Container {
                        init: v[0],
                        stage1: (v[1] > 0).then_some((v[1], v[2])),
                    });
                }
                "--pipes" => {
                    let v = fds(2)?;
                    output = Some(Output::Pipes {
                        stdout: v[0],
                        stderr: v[1],
                    });
                }
                "--terminal" => {
                    output = Some(Output::Terminal {
                        master: fd_arg(value)?,
                    })
                }
                "--stdin" => stdin = Some(fd_arg(value)?),
                "--terminal-stdin" => terminal_stdin = text == "1",
                "--listen" => listener = Some(fd_arg(value)?),
                "--client" => {
                    let (fd, req) = text
                        .split_once(':')
                        .ok_or_else(|| format!("bad --client {text:?}"))?;
                    let fd = fd_arg(OsStr::new(fd))?;
                    let req = Request::parse(&req.replace('+', " "))
                        .ok_or_else(|| format!("bad --client request {req:?}"))?;
                    clients.push((fd, req));
                }
                "--log" => log = Some(PathBuf::from(value)),
                "--log-max-size" => log_max_size = num_arg(value)?,
                "--log-max-files" => log_max_files = num_arg(value)?,
                "--stop-signal" => stop_signal = num_arg(value)?,
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        let missing = |what: &str| format!("missing {what}");
        Ok(Config {
            id: id.ok_or_else(|| missing("--id"))?,
            berth: berth.ok_or_else(|| missing("--berth"))?,
            sandbox: sandbox.ok_or_else(|| missing("--container"))?,
            output: output.ok_or_else(|| missing("--pipes or --terminal"))?,
            stdin,
            terminal_stdin,
            listener: listener.ok_or_else(|| missing("--listen"))?,
            clients,
            log: log.ok_or_else(|| missing("--log"))?,
            log_max_size,
            log_max_files,
            stop_signal,
        })
    }
}

/// What a connected client is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Its request line has not arrived yet.
    Request,
    Attached {
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    /// Waits for the exit status (`wait`, `stop`).
    Waiting,
    /// Got its answer; goes once the answer is written.
    Done,
}

struct Client {
    fd: RawFd,
    role: Role,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// A `stop` client, told when the stop timer runs out and SIGKILL follows.
    stopping: bool,
}

impl Client {
    fn new(fd: RawFd, role: Role) -> Client {
        Client {
            fd,
            role,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            stopping: false,
        }
    }

    fn queue(&mut self, kind: u8, payload: &[u8]) {
        self.outbuf
            .extend_from_slice(&proto::header(kind, payload.len()));
        self.outbuf.extend_from_slice(payload);
    }

    /// Writes what it can without blocking; false when the client is gone.
    fn flush(&mut self) -> bool {
        while !self.outbuf.is_empty() {
            // SAFETY: send reads outbuf.len() bytes from a live buffer; MSG_NOSIGNAL turns a
            // closed peer into EPIPE instead of SIGPIPE.
            let n = unsafe {
                libc::send(
                    self.fd,
                    self.outbuf.as_ptr().cast(),
                    self.outbuf.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => self.outbuf.len() <= MAX_CLIENT_BACKLOG,
                    io::ErrorKind::Interrupted => continue,
                    _ => false,
                };
            }
            self.outbuf.drain(..n as usize);
        }
        true
    }
}

fn close(fd: RawFd) {
    // SAFETY: closing a descriptor this process owns and no longer uses.
    unsafe { libc::close(fd) };
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own, with integer arguments.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

pub(crate) fn set_cloexec(fd: RawFd, on: bool) {
    // SAFETY: fcntl on a descriptor we own, with integer arguments.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            let flags = if on {
                flags | libc::FD_CLOEXEC
            } else {
                flags & !libc::FD_CLOEXEC
            };
            libc::fcntl(fd, libc::F_SETFD, flags);
        }
    }
}

/// read(2) into `buf`: Ok(0) at end of file, Err(WouldBlock) when nothing is there.
fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: read writes at most buf.len() bytes into a live buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn write_fd(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: write reads data.len() bytes from a live buffer.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Signals the monitor takes through its signalfd.
fn monitor_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a sigset_t we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// The live state of the loop.
struct Monitor {
    cfg: Config,
    log: Option<LogWriter>,
    clients: Vec<Client>,
    stdin_backlog: Vec<u8>,
    /// The exit status, once the sandbox reported it.
    exit: Option<i32>,
    stage1_gone: bool,
    status_buf: Vec<u8>,
    /// Output descriptors still open: stdout/terminal, stderr.
    out_open: [bool; 2],
    /// A user stopped (or killed) the sandbox: no restart.
    stopped: bool,
    timer: Option<RawFd>,
    sfd: RawFd,
}

impl Monitor {
    fn sandbox_init(&self) -> i32 {
        match self.cfg.sandbox {
            Sandbox::Container { init, .. } => init,
        }
    }

    fn signal_sandbox(&self, sig: i32) {
        if self.exit.is_none() {
            // SAFETY: kill with an integer pid and signal.
            unsafe { libc::kill(self.sandbox_init(), sig) };
        }
    }

    fn out_fds(&self) -> [Option<(RawFd, Stream)>; 2] {
        match self.cfg.output {
            Output::Pipes { stdout, stderr } => [
                self.out_open[0].then_some((stdout, Stream::Stdout)),
                self.out_open[1].then_some((stderr, Stream::Stderr)),
            ],
            Output::Terminal { master } => {
                [self.out_open[0].then_some((master, Stream::Stdout)), None]
            }
        }
    }

    /// Reads what one output descriptor has: logs it and hands it to attached clients.
    fn pump(&mut self, slot: usize, fd: RawFd, stream: Stream) {
        let mut buf = [0u8; 8192];
        loop {
            match read_fd(fd, &mut buf) {
                Ok(0) => {
                    self.out_open[slot] = false;
                    return;
                }
                Ok(n) => {
                    let data = &buf[..n];
                    if let Some(log) = &mut self.log {
                        log.write(stream, data);
                    }
                    let kind = match stream {
                        Stream::Stdout => proto::STDOUT,
                        Stream::Stderr => proto::STDERR,
                    };
                    for c in &mut self.clients {
                        if let Role::Attached { stdout, stderr, .. } = c.role {
                            if (stream == Stream::Stdout && stdout)
                                || (stream == Stream::Stderr && stderr)
                            {
                                c.queue(kind, data);
                            }
                        }
                    }
                    if n < buf.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // EIO: the terminal's last holder closed it.
                Err(_) => {
                    self.out_open[slot] = false;
                    return;
                }
            }
        }
    }

    fn read_status(&mut self, status: RawFd) -> bool {
        let mut buf = [0u8; 64];
        match read_fd(status, &mut buf) {
            Ok(0) => {
                // Stage 1 died without a word (killed): the container went with it.
                self.exit.get_or_insert(137);
                false
            }
            Ok(n) => {
                self.status_buf.extend_from_slice(&buf[..n]);
                while let Some(i) = self.status_buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = self.status_buf.drain(..=i).collect();
                    let text = String::from_utf8_lossy(&line);
                    if let Some(code) = parse_status_line(text.trim()) {
                        self.exit = Some(code);
                    }
                }
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
            Err(_) => {
                self.exit.get_or_insert(137);
                false
            }
        }
    }

    fn reap(&mut self) {
        let Sandbox::Container { init, stage1 } = self.cfg.sandbox;
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes the status into a local integer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            match stage1 {
                Some((s, _)) if pid == s => self.stage1_gone = true,
                None if pid == init => {
                    self.stage1_gone = true;
                    self.exit = Some(if libc::WIFSIGNALED(status) {
                        128 + libc::WTERMSIG(status)
                    } else {
                        libc::WEXITSTATUS(status)
                    });
                }
                _ => {}
            }
        }
    }

    fn on_signals(&mut self) {
        loop {
            // SAFETY: signalfd_siginfo is plain data; read fills at most its size.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reading one signalfd_siginfo into the local above.
            let buf = unsafe {
                std::slice::from_raw_parts_mut(
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    size,
                )
            };
            match read_fd(self.sfd, buf) {
                Ok(n) if n == size => {}
                _ => return,
            }
            match info.ssi_signo as i32 {
                libc::SIGCHLD => self.reap(),
                // Asked to go: stop the sandbox as `berth stop` would, then end as usual.
                _ => self.stop(10),
            }
        }
    }

    fn stop(&mut self, secs: u32) {
        self.stopped = true;
        if self.exit.is_some() {
            return;
        }
        if secs == 0 {
            self.signal_sandbox(libc::SIGKILL);
            return;
        }
        self.signal_sandbox(self.cfg.stop_signal);
        if self.timer.is_none() {
            // SAFETY: timerfd_create with constant flags; the result is checked.
            let fd = unsafe {
                libc::timerfd_create(
                    libc::CLOCK_MONOTONIC,
                    libc::TFD_CLOEXEC | libc::TFD_NONBLOCK,
                )
            };
            if fd < 0 {
                self.signal_sandbox(libc::SIGKILL);
                return;
            }
            let spec = libc::itimerspec {
                it_interval: libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: libc::timespec {
                    tv_sec: secs.into(),
                    tv_nsec: 0,
                },
            };
            // SAFETY: timerfd_settime reads one itimerspec from a live local.
            unsafe { libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()) };
            self.timer = Some(fd);
        }
    }

    fn accept(&mut self) {
        loop {
            if self.clients.len() >= MAX_CLIENTS {
                return;
            }
            // SAFETY: accept4 with null address pointers returns a new descriptor or -1.
            let fd = unsafe {
                libc::accept4(
                    self.cfg.listener,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                return;
            }
            self.clients.push(Client::new(fd, Role::Request));
        }
    }

    /// Reads from client `i`; false when it is gone.
    fn on_client(&mut self, i: usize) -> bool {
        let mut buf = [0u8; 8192];
        match read_fd(self.clients[i].fd, &mut buf) {
            Ok(0) => return false,
            Ok(n) => self.clients[i].inbuf.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
        if self.clients[i].role == Role::Request {
            let c = &mut self.clients[i];
            let Some(end) = c.inbuf.iter().position(|b| *b == b'\n') else {
                return c.inbuf.len() <= proto::MAX_REQUEST;
            };
            let line: Vec<u8> = c.inbuf.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            match Request::parse(&text) {
                Some(req) => self.on_request(i, req),
                None => {
                    let c = &mut self.clients[i];
                    c.queue(proto::ERROR, format!("unknown request {text:?}").as_bytes());
                    c.role = Role::Done;
                }
            }
        }
        self.on_input(i)
    }

    fn on_request(&mut self, i: usize, req: Request) {
        let role = match req {
            Request::Attach {
                stdin,
                stdout,
                stderr,
            } => Role::Attached {
                stdin,
                stdout,
                stderr,
            },
            Request::Wait => Role::Waiting,
            Request::Stop { secs } => {
                self.clients[i].stopping = true;
                self.stop(secs);
                Role::Waiting
            }
            Request::Kill { signal } => {
                if signal == libc::SIGKILL || signal == self.cfg.stop_signal {
                    self.stopped = true;
                }
                self.signal_sandbox(signal);
                self.clients[i].queue(proto::OK, b"");
                Role::Done
            }
        };
        self.clients[i].role = role;
    }

    /// Handles the frames an attached client sent; false to drop the client.
    fn on_input(&mut self, i: usize) -> bool {
        let Role::Attached { stdin, .. } = self.clients[i].role else {
            // Other roles send nothing after their request.
            self.clients[i].inbuf.clear();
            return true;
        };
        loop {
            let frame = match proto::next_frame(&self.clients[i].inbuf) {
                Ok(Some(f)) => f,
                Ok(None) => return true,
                Err(proto::OversizedFrame) => return false,
            };
            let (kind, range) = frame;
            let payload: Vec<u8> = self.clients[i].inbuf[range.clone()].to_vec();
            self.clients[i].inbuf.drain(..range.end);
            match kind {
                proto::STDIN if stdin => self.feed_stdin(&payload),
                proto::STDIN_EOF if stdin => {
                    if let Some(fd) = self.cfg.stdin.take() {
                        close(fd);
                    }
                }
                proto::RESIZE => self.resize(&payload),
                _ => {}
            }
        }
    }

    fn stdin_fd(&self) -> Option<RawFd> {
        match (self.cfg.stdin, &self.cfg.output) {
            (Some(fd), _) => Some(fd),
            (None, Output::Terminal { master }) if self.cfg.terminal_stdin => Some(*master),
            _ => None,
        }
    }

    fn feed_stdin(&mut self, data: &[u8]) {
        if self.stdin_fd().is_none() {
            return;
        }
        self.stdin_backlog.extend_from_slice(data);
        self.flush_stdin();
    }

    fn flush_stdin(&mut self) {
        let Some(fd) = self.stdin_fd() else {
            self.stdin_backlog.clear();
            return;
        };
        while !self.stdin_backlog.is_empty() {
            match write_fd(fd, &self.stdin_backlog) {
                Ok(n) => {
                    self.stdin_backlog.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    // The sandbox closed its stdin: what it did not read is dropped.
                    self.stdin_backlog.clear();
                    return;
                }
            }
        }
    }

    fn resize(&self, payload: &[u8]) {
        let Output::Terminal { master } = self.cfg.output else {
            return;
        };
        let [r0, r1, c0, c1] = payload else {
            return;
        };
        let ws = libc::winsize {
            ws_row: u16::from_be_bytes([*r0, *r1]),
            ws_col: u16::from_be_bytes([*c0, *c1]),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from a live local.
        unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &ws) };
    }

    fn finished(&self) -> bool {
        self.exit.is_some() && self.stage1_gone && self.out_open == [false, false]
    }

    fn run(&mut self) {
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(8 + MAX_CLIENTS);
        let mut status_open = true;
        while !self.finished() {
            fds.clear();
            let pfd = |fd: RawFd, events: libc::c_short| libc::pollfd {
                fd,
                events,
                revents: 0,
            };
            fds.push(pfd(self.sfd, libc::POLLIN));
            let Sandbox::Container { stage1, .. } = self.cfg.sandbox;
            let status = stage1.map_or(-1, |(_, fd)| fd);
            fds.push(pfd(if status_open { status } else { -1 }, libc::POLLIN));
            let outs = self.out_fds();
            for o in &outs {
                fds.push(pfd(o.map_or(-1, |(fd, _)| fd), libc::POLLIN));
            }
            fds.push(pfd(
                if self.clients.len() < MAX_CLIENTS {
                    self.cfg.listener
                } else {
                    -1
                },
                libc::POLLIN,
            ));
            fds.push(pfd(self.timer.unwrap_or(-1), libc::POLLIN));
            let stdin_wait = !self.stdin_backlog.is_empty();
            fds.push(pfd(
                if stdin_wait {
                    self.stdin_fd().unwrap_or(-1)
                } else {
                    -1
                },
                libc::POLLOUT,
            ));
            let first_client = fds.len();
            for c in &self.clients {
                let mut ev = 0;
                // While stdin is backed up, attached clients wait with their input.
                let held = self.stdin_backlog.len() >= MAX_STDIN_BACKLOG
                    && matches!(c.role, Role::Attached { stdin: true, .. });
                if !held {
                    ev |= libc::POLLIN;
                }
                if !c.outbuf.is_empty() {
                    ev |= libc::POLLOUT;
                }
                fds.push(pfd(c.fd, ev));
            }
            // SAFETY: fds is a live, initialised array of pollfd for the duration of the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if n < 0 {
                continue;
            }
            if fds[0].revents != 0 {
                self.on_signals();
            }
            if fds[1].revents != 0 {
                status_open = self.read_status(status);
            }
            for (k, o) in outs.iter().enumerate() {
                if let Some((fd, stream)) = o {
                    if fds[2 + k].revents != 0 {
                        self.pump(k, *fd, *stream);
                    }
                }
            }
            if fds[4].revents != 0 {
                self.accept();
            }
            if fds[5].revents != 0 {
                // The stop timer: whoever asked for the stop hears that SIGKILL follows.
                if self.exit.is_none() {
                    for c in self.clients.iter_mut().filter(|c| c.stopping) {
                        c.queue(proto::KILLING, b"");
                    }
                }
                self.signal_sandbox(libc::SIGKILL);
                if let Some(t) = self.timer.take() {
                    close(t);
                }
            }
            if fds[6].revents != 0 {
                self.flush_stdin();
            }
            // Clients: newest last, so indexes of those polled stay valid while we go down.
            let polled = fds.len() - first_client;
            for i in (0..polled.min(self.clients.len())).rev() {
                let rev = fds[first_client + i].revents;
                let mut alive = true;
                if rev & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                    alive = self.on_client(i);
                }
                alive = alive && self.clients[i].flush();
                if alive && self.clients[i].role == Role::Done && self.clients[i].outbuf.is_empty()
                {
                    alive = false;
                }
                if !alive {
                    close(self.clients.remove(i).fd);
                }
            }
            // Output queued by pump for clients not polled for writing yet.
            for i in (0..self.clients.len()).rev() {
                if !self.clients[i].outbuf.is_empty() && !self.clients[i].flush() {
                    close(self.clients.remove(i).fd);
                }
            }
        }
    }

    /// Writes what clients still have queued, waiting up to a few seconds for slow ones.
    fn drain_clients(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.clients.iter().any(|c| !c.outbuf.is_empty())
            && std::time::Instant::now() < deadline
        {
            let mut fds: Vec<libc::pollfd> = self
                .clients
                .iter()
                .map(|c| libc::pollfd {
                    fd: if c.outbuf.is_empty() { -1 } else { c.fd },
                    events: libc::POLLOUT,
                    revents: 0,
                })
                .collect();
            // SAFETY: fds is a live array of pollfd for the duration of the call.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
            for i in (0..self.clients.len()).rev() {
                if !self.clients[i].flush() {
                    close(self.clients.remove(i).fd);
                }
            }
        }
    }
}

/// Parses stage 1's report: `exit N` or `signal N` (128+N).
pub fn parse_status_line(line: &str) -> Option<i32> {
    let (kind, n) = line.split_once(' ')?;
    let n: i32 = n.trim().parse().ok()?;
    match kind {
        "exit" => Some(n),
        "signal" => Some(128 + n),
        _ => None,
    }
}

/// Runs the monitor until the sandbox has ended, then becomes `berth __exited`, which records
/// the end, answers the waiting clients, and applies the restart policy. Returns only when
/// that exec fails.
pub fn serve(cfg: Config) -> io::Error {
    let set = monitor_signals();
    let mut old: libc::sigset_t = set;
    // SAFETY: sigprocmask reads `set` and writes the previous mask into `old`; both live.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) };
    // SAFETY: signalfd on a valid sigset; the result is checked.
    let sfd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if sfd < 0 {
        return io::Error::last_os_error();
    }
    let log = match LogWriter::open(&cfg.log, cfg.log_max_size, cfg.log_max_files) {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!(
                "berth-monitor {}: cannot open the log {}: {e}; output is not kept",
                cfg.id,
                cfg.log.display()
            );
            None
        }
    };
    let Sandbox::Container { stage1, .. } = cfg.sandbox;
    let mut fds: Vec<RawFd> = stage1.map(|(_, fd)| fd).into_iter().collect();
    fds.push(cfg.listener);
    match cfg.output {
        Output::Pipes { stdout, stderr } => fds.extend([stdout, stderr]),
        Output::Terminal { master } => fds.push(master),
    }
    fds.extend(cfg.stdin);
    for fd in fds {
        set_nonblocking(fd);
    }
    let out_open = match cfg.output {
        Output::Pipes { .. } => [true, true],
        Output::Terminal { .. } => [true, false],
    };
    let clients = cfg
        .clients
        .iter()
        .map(|(fd, req)| {
            set_nonblocking(*fd);
            let role = match req {
                Request::Attach {
                    stdin,
                    stdout,
                    stderr,
                } => Role::Attached {
                    stdin: *stdin,
                    stdout: *stdout,
                    stderr: *stderr,
                },
                _ => Role::Waiting,
            };
            Client::new(*fd, role)
        })
        .collect();
    let mut m = Monitor {
        cfg,
        log,
        clients,
        stdin_backlog: Vec::new(),
        exit: None,
        stage1_gone: false,
        status_buf: Vec::new(),
        out_open,
        stopped: false,
        timer: None,
        sfd,
    };
    // A child that ended before the signalfd existed.
    m.reap();
    m.run();
    m.drain_clients();
    drop(m.log.take());

    // The clients that wait for the end go to `berth __exited`, which answers them; so do
    // those whose request has not arrived yet: the end is the answer to every request now.
    let mut args: Vec<OsString> = vec![
        "__exited".into(),
        "--id".into(),
        m.cfg.id.clone().into(),
        "--code".into(),
        m.exit.unwrap_or(137).to_string().into(),
        "--listen".into(),
        m.cfg.listener.to_string().into(),
    ];
    if m.stopped {
        args.push("--stopped".into());
    }
    set_cloexec(m.cfg.listener, false);
    for c in &m.clients {
        if c.role != Role::Done {
            set_cloexec(c.fd, false);
            args.push("--client".into());
            args.push(c.fd.to_string().into());
        }
    }
    // The next process starts with the signal mask berth had.
    // SAFETY: sigprocmask reads a live sigset.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    exec(&m.cfg.berth, &args)
}

/// Replaces this process with `program args`; returns the error when that fails.
pub fn exec(program: &std::path::Path, args: &[OsString]) -> io::Error {
    let Ok(path) = CString::new(program.as_os_str().as_bytes()) else {
        return io::Error::new(io::ErrorKind::InvalidInput, "NUL in the program path");
    };
    let mut owned: Vec<CString> = vec![path.clone()];
    for a in args {
        match CString::new(a.clone().into_vec()) {
            Ok(c) => owned.push(c),
            Err(_) => return io::Error::new(io::ErrorKind::InvalidInput, "NUL in an argument"),
        }
    }
    let mut argv: Vec<*const libc::c_char> = owned.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    extern "C" {
        static environ: *const *const libc::c_char;
    }
    // SAFETY: argv is a NULL-terminated array of pointers to live C strings; environ is the
    // process environment, valid for the duration of the call.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), environ) };
    io::Error::last_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_round_trips() {
        let cfg = Config {
            id: "abc".into(),
            berth: "/usr/bin/berth".into(),
            sandbox: Sandbox::Container {
                init: 100,
                stage1: Some((99, 5)),
            },
            output: Output::Pipes {
                stdout: 6,
                stderr: 7,
            },
            stdin: Some(8),
            terminal_stdin: false,
            listener: 9,
            clients: vec![(
                10,
                Request::Attach {
                    stdin: true,
                    stdout: true,
                    stderr: true,
                },
            )],
            log: "/tmp/x/container.log".into(),
            log_max_size: 4096,
            log_max_files: 3,
            stop_signal: 15,
        };
        assert_eq!(Config::parse(&cfg.to_args()), Ok(cfg.clone()));
        let handed = Config {
            sandbox: Sandbox::Container {
                init: 100,
                stage1: None,
            },
            ..cfg
        };
        assert_eq!(Config::parse(&handed.to_args()), Ok(handed));
        assert!(Config::parse(&["--id".into()]).is_err());
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line("exit 3"), Some(3));
        assert_eq!(parse_status_line("signal 9"), Some(137));
        assert_eq!(parse_status_line("pid 7"), None);
    }
}
