//! The microVM wall: runs an OCI runtime spec's process inside a VM of its own. The VM boots
//! berth's guest kernel with the agent as `/init`, the image's layer disks as virtio-blk
//! devices and the agent channel as a virtio console; the agent stacks the layers, applies the
//! spec and runs the process, and this side carries stdin, stdout, stderr, the terminal size
//! and signals over the channel until the agent reports the exit status.
//!
//! Threads: the vCPUs and the console's input thread (the VMM's), one reading the agent's
//! frames, one waiting for the VM to end; the calling thread polls the user's stdin, the
//! signals and the events of the other two.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use berth_agent::net::GuestNetwork;
use berth_agent::protocol::{Frame, ProtocolError, StartOptions};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::exec;
use super::guest::disk_name;
use super::jailed::{self, JailedIo, VmmError};
use super::passt::{self, Forward, PasstError};
use super::{DiskConfig, RunReport, VmConfig};
use crate::term::{self, RawMode};

/// The signals a running sandbox's process receives from berth (as `docker run` proxies them).
pub(super) const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGCONT,
];

/// How long the agent may take to come up before berth gives up on the VM.
const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the last frames of a VM that ended may take to be read.
const CHANNEL_DRAIN: Duration = Duration::from_secs(2);
/// How long a guest may take to power off after its process ended.
const POWER_OFF_GRACE: Duration = Duration::from_secs(10);
/// How often the hosts file of a VM on a user-defined network is looked at.
const HOSTS_POLL: Duration = Duration::from_millis(200);
/// The largest hosts file sent to a guest (a frame's payload limit, with room to spare).
const MAX_HOSTS: u64 = 512 << 10;
/// The smallest free block (2^N pages) the guest reports to the balloon, which gives it back
/// to the host; BERTH_VM_REPORTING_ORDER overrides it. Smaller blocks give back more of an
/// idle guest; every block reported costs the guest a fault when it uses the block again.
const REPORTING_ORDER: u8 = 3;

/// Follows the hosts file the network daemon rewrites in place: what it says now, when that
/// differs from what the guest was last sent. Reading a few KiB a few times a second is
/// cheaper than it sounds and needs no inotify descriptor; a rewrite caught half-way (the
/// daemon truncates, then writes) is corrected by the next look.
struct HostsFollower {
    path: PathBuf,
    sent: Option<Vec<u8>>,
    next: Instant,
}

impl HostsFollower {
    fn new(path: PathBuf) -> HostsFollower {
        // Nothing recorded as sent: the first look after the start sends the file once more,
        // in case it changed since the start options were read.
        HostsFollower {
            path,
            sent: None,
            next: Instant::now(),
        }
    }

    fn changed(&mut self) -> Option<Vec<u8>> {
        let now = Instant::now();
        if now < self.next {
            return None;
        }
        self.next = now + HOSTS_POLL;
        let f = std::fs::File::open(&self.path).ok()?;
        let mut text = Vec::new();
        f.take(MAX_HOSTS).read_to_end(&mut text).ok()?;
        if text.is_empty() || self.sent.as_ref() == Some(&text) {
            return None;
        }
        self.sent = Some(text.clone());
        Some(text)
    }
}

/// What to run, and in how much machine.
#[derive(Debug)]
pub struct SandboxConfig {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// The image's layer disks (erofs), bottom layer first.
    pub layers: Vec<PathBuf>,
    /// The disk (ext4) for the root's writable layer; `None`: the guest's memory.
    pub upper: Option<PathBuf>,
    /// Host directories for the guest (`-v`, `--mount`): the spec mounts them by tag.
    pub shares: Vec<super::ShareConfig>,
    pub vcpus: u8,
    pub mem_mib: u64,
    /// The OCI runtime spec (config.json).
    pub spec: Vec<u8>,
    pub tty: bool,
    pub attach_stdin: bool,
    /// /etc/hostname, /etc/hosts and /etc/resolv.conf for the guest, by file name.
    pub etc_files: Vec<(String, String)>,
    /// Where the guest's serial console (kernel messages, agent failures) is written.
    pub console_log: PathBuf,
    /// The guest's network behind a virtio-net NIC; `None` for a guest with loopback only.
    pub network: Option<SandboxNetwork>,
    /// Where `berth exec` clients connect once the process runs (a detached sandbox's VMM;
    /// see [`super::exec`]).
    pub exec: Option<UnixListener>,
}

/// The back end of a sandbox's NIC.
#[derive(Debug)]
pub enum SandboxNetwork {
    /// A user-mode network of its own: passt, publishing these ports.
    Passt(Vec<Forward>),
    /// A user-defined network: a tap on its bridge (from the network daemon), the guest's
    /// address there, and the hosts file the daemon rewrites as peers come and go, which
    /// berth follows into the guest.
    Tap {
        tap: std::os::fd::OwnedFd,
        guest: GuestNetwork,
        hosts: PathBuf,
    },
}

/// How long the guest took to come up, as the agent reported it.
#[derive(Debug, Clone, Copy)]
pub struct BootTimes {
    /// From the VMM's start to the agent's ready message.
    pub to_agent: Duration,
    /// The guest's own clock at that moment (kernel + agent set-up).
    pub guest_uptime: Duration,
}

/// The process's exit status and the VM's boot times.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub exit_code: i32,
    pub boot: Option<BootTimes>,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("this host's /dev/kvm is PVM (kvm_pvm, software nested virtualization): it runs tiny guests, but a Linux guest never reaches userspace on it. Use a host with hardware KVM (bare metal, or a cloud VM with nested virtualization), or run berth inside scripts/kvm-nested")]
    PvmHost,
    #[error(transparent)]
    Vm(#[from] super::Error),
    #[error(transparent)]
    Vmm(#[from] VmmError),
    #[error("the agent channel: {0}")]
    Channel(#[source] io::Error),
    #[error("the agent broke the protocol: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("the microVM stopped ({reason}) before its process ended; the guest console said:\n{console}")]
    Stopped { reason: String, console: String },
    #[error("the guest agent did not come up within {}s; the guest console said:\n{console}", timeout.as_secs())]
    BootTimeout { timeout: Duration, console: String },
    #[error(transparent)]
    Network(#[from] PasstError),
    #[error("cannot set up signal handling: {0}")]
    Signals(#[source] nix::Error),
    #[error("cannot open the console log {}: {source}", path.display())]
    ConsoleLog {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The agent could not start the process (Docker's 125/126/127).
    #[error("{message}")]
    Start { code: i32, message: String },
    #[error("the microVM ended, or its VMM closed the session, before the exec'd process did: `berth ps -a` and `berth logs` tell how the sandbox ended")]
    ExecLost,
}

/// What the frame reader and the VM waiter tell the main loop.
enum Event {
    Ready { boot_us: u64, at: Instant },
    Started,
    Exit(i32),
    StartFailed { code: i32, message: String },
    ChannelClosed(Option<ProtocolError>),
    VmEnded(Result<RunReport, VmmError>),
}

/// Whether this host can run a berth microVM: KVM opens, and it is not PVM (on which a Linux
/// guest would never reach userspace: better to say so at once than to hang).
pub fn check_host() -> Result<(), SandboxError> {
    if super::kvm_is_pvm() && std::env::var_os("BERTH_VM_ALLOW_PVM").is_none() {
        return Err(SandboxError::PvmHost);
    }
    #[cfg(target_arch = "x86_64")]
    super::vm::open_kvm().map_err(|e| SandboxError::Vm(e.into()))?;
    Ok(())
}

/// Runs the sandbox to the end of its process; returns its exit status (128+N for a signal).
/// `on_started` runs once the process runs (the agent said so); from then on `cfg.exec`
/// takes exec sessions.
#[cfg(target_arch = "x86_64")]
pub fn run(cfg: &SandboxConfig, mut on_started: impl FnMut()) -> Result<Outcome, SandboxError> {
    check_host()?;
    let start = Instant::now();

    // Signals for the process are read from a signalfd; the threads started below inherit the
    // mask, so none of them takes a signal meant for the sandbox.
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(*s);
    }
    mask.add(Signal::SIGWINCH);
    let mut old_mask = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old_mask))
        .map_err(SandboxError::Signals)?;
    let _restore = MaskGuard(old_mask);
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(SandboxError::Signals)?;

    let console =
        std::fs::File::create(&cfg.console_log).map_err(|source| SandboxError::ConsoleLog {
            path: cfg.console_log.clone(),
            source,
        })?;
    // BERTH_VM_DEBUG=1: the kernel's full log, on berth's stderr as well as in the log file.
    let debug = std::env::var_os("BERTH_VM_DEBUG").is_some_and(|v| !v.is_empty() && v != "0");
    let console_copy = if debug {
        Some(
            io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .map_err(SandboxError::Channel)?,
        )
    } else {
        None
    };
    let (host, device) = UnixStream::pair().map_err(SandboxError::Channel)?;
    let layers: Vec<String> = (0..cfg.layers.len()).map(disk_name).collect();
    // The writable disk comes after the layers.
    let upper = cfg
        .upper
        .as_ref()
        .map(|_| format!(" berth.upper={}", disk_name(cfg.layers.len())))
        .unwrap_or_default();
    let reporting_order = std::env::var("BERTH_VM_REPORTING_ORDER")
        .ok()
        .and_then(|v| v.parse::<u8>().ok())
        .unwrap_or(REPORTING_ORDER);
    let cmdline = format!(
        "{} {} nomodules 8250.nr_uarts=1 random.trust_cpu=on rdinit=/init berth.layers={} berth.layerfs=erofs berth.channel=hvc0{upper} berth.reporting_order={reporting_order}",
        super::DEFAULT_CMDLINE.replace("panic=1", "panic=-1"),
        if debug { "loglevel=8" } else { "quiet" },
        layers.join(",")
    );
    let config = VmConfig {
        kernel: cfg.kernel.clone(),
        initrd: Some(cfg.initramfs.clone()),
        cmdline,
        vcpus: cfg.vcpus,
        mem_mib: cfg.mem_mib,
        disks: cfg
            .layers
            .iter()
            .map(|p| DiskConfig {
                path: p.clone(),
                read_only: true,
            })
            .chain(cfg.upper.iter().map(|p| DiskConfig {
                path: p.clone(),
                read_only: false,
            }))
            .collect(),
        shares: cfg.shares.clone(),
        balloon: true,
    };
    let (_passt, net) = match &cfg.network {
        Some(SandboxNetwork::Passt(forwards)) => {
            let log_path = cfg.console_log.with_file_name("passt.log");
            let log =
                std::fs::File::create(&log_path).map_err(|source| SandboxError::ConsoleLog {
                    path: log_path,
                    source,
                })?;
            let (passt, stream) = passt::start(forwards, log)?;
            (
                Some(passt),
                // The MAC follows the address, as a container's does (`inspect` shows it).
                Some((
                    super::NetBackend::Stream(stream),
                    crate::net::mac_octets(passt::GUEST),
                )),
            )
        }
        Some(SandboxNetwork::Tap { tap, guest, .. }) => {
            let tap = tap.try_clone().map_err(SandboxError::Channel)?;
            (
                None,
                Some((
                    super::NetBackend::Tap(tap),
                    crate::net::mac_octets(guest.address),
                )),
            )
        }
        None => (None, None),
    };
    // On a user-defined network the daemon rewrites the hosts file as peers come and go;
    // berth reads it a few times a second and sends the guest what changed.
    let mut hosts = match &cfg.network {
        Some(SandboxNetwork::Tap { hosts, .. }) => Some(HostsFollower::new(hosts.clone())),
        _ => None,
    };
    let io = JailedIo {
        console: console.into(),
        console_copy,
        channel: Some(device),
        net,
    };
    let vm = jailed::start(&config, io)?;
    // However the run ends here, the VMM ends with it.
    let _stop = StopOnReturn(vm.stopper());

    let (events_tx, events) = mpsc::channel();
    let (wake_r, wake_w) = nix::unistd::pipe().map_err(|e| SandboxError::Channel(e.into()))?;
    let wake_w = std::sync::Arc::new(wake_w);
    let notify = {
        let wake_w = wake_w.clone();
        move |tx: &mpsc::Sender<Event>, ev: Event| {
            let _ = tx.send(ev);
            let _ = nix::unistd::write(wake_w.as_fd(), &[1]);
        }
    };
    {
        let tx = events_tx.clone();
        let notify = notify.clone();
        std::thread::Builder::new()
            .name("vm-wait".into())
            .spawn(move || notify(&tx, Event::VmEnded(vm.wait())))
            .map_err(SandboxError::Channel)?;
    }
    let sessions = exec::Sessions::default();
    {
        let tx = events_tx;
        let reader = host.try_clone().map_err(SandboxError::Channel)?;
        let notify = notify.clone();
        let sessions = sessions.clone();
        std::thread::Builder::new()
            .name("agent-frames".into())
            .spawn(move || read_frames(reader, &sessions, |ev| notify(&tx, ev)))
            .map_err(SandboxError::Channel)?;
    }

    let mut session = Session {
        cfg,
        host: std::sync::Arc::new(std::sync::Mutex::new(host)),
        started: false,
        running: false,
        stdin_open: cfg.attach_stdin,
        boot: None,
        raw: None,
    };
    let boot_timeout = std::env::var("BERTH_VM_BOOT_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_BOOT_TIMEOUT);
    let stdin = io::stdin();
    let mut exit_code: Option<i32> = None;
    let mut exit_deadline: Option<Instant> = None;
    // The VM ended before the exit status was read: the frames it sent last may still be on
    // their way through the channel, which closes once they are read.
    let mut vm_ended: Option<(String, Instant)> = None;
    loop {
        if session.started && exit_code.is_none() {
            if let Some(text) = hosts.as_mut().and_then(HostsFollower::changed) {
                // A guest that stopped reading cannot take it; its end is reported below.
                let _ = session.send(&Frame::Hosts(text));
            }
        }
        let deadline = match (session.started, exit_deadline, &vm_ended) {
            (_, _, Some((_, d))) => Some(*d),
            (_, Some(d), None) => Some(d),
            (false, None, None) => Some(start + boot_timeout),
            (true, None, None) => None,
        };
        let timeout = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    if let Some((reason, _)) = vm_ended {
                        return Err(SandboxError::Stopped {
                            reason,
                            console: console_tail(&cfg.console_log),
                        });
                    }
                    if let Some(code) = exit_code {
                        // The process ended but the guest did not power off: the VM goes with
                        // this process.
                        return Ok(Outcome {
                            exit_code: code,
                            boot: session.boot,
                        });
                    }
                    return Err(SandboxError::BootTimeout {
                        timeout: boot_timeout,
                        console: console_tail(&cfg.console_log),
                    });
                }
                PollTimeout::try_from(left.as_millis().min(60_000) as i32)
                    .unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let timeout = match &hosts {
            Some(_) if session.started => {
                let cap = PollTimeout::try_from(HOSTS_POLL.as_millis() as i32)
                    .unwrap_or(PollTimeout::MAX);
                if timeout == PollTimeout::NONE {
                    cap
                } else {
                    timeout.min(cap)
                }
            }
            _ => timeout,
        };
        let poll_stdin = session.started && session.stdin_open && exit_code.is_none();
        let mut fds = vec![
            PollFd::new(wake_r.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        if poll_stdin {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(SandboxError::Channel(e.into())),
        }
        let ready = |fd: &PollFd| {
            fd.revents().is_some_and(|r| {
                r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            })
        };
        let (wake, sig, input) = (
            ready(&fds[0]),
            ready(&fds[1]),
            fds.get(2).is_some_and(ready),
        );
        drop(fds);

        if input {
            session.forward_stdin(stdin.as_fd())?;
        }
        if sig {
            while let Ok(Some(si)) = sfd.read_signal() {
                let Ok(signal) = Signal::try_from(si.ssi_signo as i32) else {
                    continue;
                };
                if !session.started {
                    // Nothing to deliver to yet: the VM goes with berth, as the process would.
                    if signal != Signal::SIGWINCH {
                        return Ok(Outcome {
                            exit_code: 128 + signal as i32,
                            boot: None,
                        });
                    }
                    continue;
                }
                let frame = if signal == Signal::SIGWINCH {
                    let Some(ws) = term::window_size(stdin.as_fd()) else {
                        continue;
                    };
                    Frame::Resize {
                        rows: ws.ws_row,
                        cols: ws.ws_col,
                    }
                } else {
                    Frame::Signal(signal as i32)
                };
                // A guest that stopped reading cannot take it; the VM's end is reported below.
                let _ = session.send(&frame);
            }
        }
        if wake {
            let mut byte = [0u8; 64];
            let _ = nix::unistd::read(wake_r.as_raw_fd(), &mut byte);
            while let Ok(ev) = events.try_recv() {
                match ev {
                    Event::Ready { boot_us, at } => {
                        if session.started {
                            continue;
                        }
                        let boot = BootTimes {
                            to_agent: at.saturating_duration_since(start),
                            guest_uptime: Duration::from_micros(boot_us),
                        };
                        session.boot = Some(boot);
                        session.start()?;
                        // Said when it happens, so that a tool waiting for a long-running
                        // VM to be ready (`berth bench density`) can see it.
                        if std::env::var_os("BERTH_BOOT_TIMES").is_some() {
                            eprintln!(
                                "berth: microVM agent ready {} ms after start (guest uptime {} ms)",
                                boot.to_agent.as_millis(),
                                boot.guest_uptime.as_millis()
                            );
                        }
                    }
                    Event::Started => {
                        if session.running {
                            continue;
                        }
                        session.running = true;
                        on_started();
                        if let Some(listener) = &cfg.exec {
                            let listener = listener.try_clone().map_err(SandboxError::Channel)?;
                            exec::serve(listener, session.host.clone(), sessions.clone())
                                .map_err(SandboxError::Channel)?;
                        }
                    }
                    Event::Exit(code) => {
                        if vm_ended.is_some() {
                            return Ok(Outcome {
                                exit_code: code,
                                boot: session.boot,
                            });
                        }
                        exit_code = Some(code);
                        exit_deadline = Some(Instant::now() + POWER_OFF_GRACE);
                    }
                    Event::StartFailed { code, message } => {
                        return Err(SandboxError::Start { code, message });
                    }
                    Event::ChannelClosed(err) => {
                        if exit_code.is_none() {
                            if let Some(e) = err {
                                return Err(e.into());
                            }
                            if let Some((reason, _)) = vm_ended {
                                return Err(SandboxError::Stopped {
                                    reason,
                                    console: console_tail(&cfg.console_log),
                                });
                            }
                        }
                    }
                    Event::VmEnded(result) => {
                        if let Some(code) = exit_code {
                            return Ok(Outcome {
                                exit_code: code,
                                boot: session.boot,
                            });
                        }
                        let reason = match result {
                            Ok(report) => report.exit.to_string(),
                            Err(e) => e.to_string(),
                        };
                        vm_ended = Some((reason, Instant::now() + CHANNEL_DRAIN));
                    }
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub fn run(_cfg: &SandboxConfig, _on_started: impl FnMut()) -> Result<Outcome, SandboxError> {
    Err(SandboxError::Vm(super::Error::UnsupportedArch))
}

/// The host end of one session.
struct Session<'a> {
    cfg: &'a SandboxConfig,
    host: exec::Channel,
    /// The Start was sent.
    started: bool,
    /// The agent said the process runs.
    running: bool,
    stdin_open: bool,
    boot: Option<BootTimes>,
    raw: Option<RawMode>,
}

impl Session<'_> {
    fn send(&mut self, frame: &Frame) -> Result<(), SandboxError> {
        exec::send(&self.host, frame).map_err(SandboxError::from)
    }

    fn start(&mut self) -> Result<(), SandboxError> {
        let size = term::initial_size();
        let options = StartOptions {
            stdin: self.cfg.attach_stdin,
            rows: size.ws_row,
            cols: size.ws_col,
            etc_files: self.cfg.etc_files.clone(),
            network: self.cfg.network.as_ref().map(|n| match n {
                SandboxNetwork::Passt(_) => GuestNetwork {
                    interface: "eth0".into(),
                    address: passt::GUEST,
                    prefix_len: passt::PREFIX_LEN,
                    gateway: passt::GATEWAY,
                    tcp_window: Some(passt::GUEST_TCP_WINDOW),
                },
                SandboxNetwork::Tap { guest, .. } => guest.clone(),
            }),
            builtin: None,
        };
        // Raw mode only when keystrokes go to the sandbox (-t with -i), as the container wall
        // does: with -t alone Ctrl-C stays a signal to berth, which forwards it.
        if self.cfg.tty
            && self.cfg.attach_stdin
            && nix::unistd::isatty(io::stdin().as_raw_fd()).unwrap_or(false)
        {
            self.raw = Some(RawMode::enter());
        }
        self.send(&Frame::Start {
            spec: self.cfg.spec.clone(),
            options,
        })?;
        self.started = true;
        Ok(())
    }

    fn forward_stdin(&mut self, stdin: BorrowedFd) -> Result<(), SandboxError> {
        let mut buf = [0u8; 32 << 10];
        match nix::unistd::read(stdin.as_raw_fd(), &mut buf) {
            Ok(0) | Err(_) => {
                self.stdin_open = false;
                let _ = self.send(&Frame::StdinEof);
            }
            Ok(n) => {
                let _ = self.send(&Frame::Stdin(buf[..n].to_vec()));
            }
        }
        Ok(())
    }
}

/// Reads the agent's frames: output to berth's stdout and stderr, exec sessions' frames to
/// their clients, the rest as events.
fn read_frames(mut channel: UnixStream, sessions: &exec::Sessions, mut report: impl FnMut(Event)) {
    let mut stdout = io::stdout();
    let mut stderr = io::stderr();
    loop {
        let frame = match Frame::read_from(&mut channel) {
            Ok(f) => f,
            Err(ProtocolError::Closed) => return report(Event::ChannelClosed(None)),
            Err(e) => return report(Event::ChannelClosed(Some(e))),
        };
        match frame {
            Frame::Ready { boot_us } => report(Event::Ready {
                boot_us,
                at: Instant::now(),
            }),
            Frame::Stdout(data) => {
                let _ = stdout.write_all(&data).and_then(|()| stdout.flush());
            }
            Frame::Stderr(data) => {
                let _ = stderr.write_all(&data).and_then(|()| stderr.flush());
            }
            Frame::Started => report(Event::Started),
            Frame::Session { id, frame } => {
                if let Err(e) = sessions.deliver(id, *frame) {
                    return report(Event::ChannelClosed(Some(e)));
                }
            }
            Frame::Exit(code) => return report(Event::Exit(code)),
            Frame::Error { code, message } => return report(Event::StartFailed { code, message }),
            // Frames only the host sends: a confused or hostile guest.
            other => {
                return report(Event::ChannelClosed(Some(ProtocolError::Malformed {
                    kind: "guest",
                    why: format!("unexpected {other:?} from the guest"),
                })))
            }
        }
    }
}

/// The last lines of the guest console, for error messages.
fn console_tail(path: &std::path::Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        let start = bytes.len().saturating_sub(4096);
        text = String::from_utf8_lossy(&bytes[start..]).into_owned();
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    if tail.trim().is_empty() {
        "(nothing)".into()
    } else {
        tail
    }
}

/// Kills the jailed VMM when dropped.
struct StopOnReturn(jailed::Stopper);

impl Drop for StopOnReturn {
    fn drop(&mut self) {
        self.0.kill();
    }
}

/// Restores the signal mask when dropped.
struct MaskGuard(SigSet);

impl Drop for MaskGuard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.0), None);
    }
}
