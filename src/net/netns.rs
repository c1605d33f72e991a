//! The rootless network namespace of user-defined networks, one per user (as Podman's):
//! a daemon holds a user namespace and a network namespace with a bridge per network, a veth
//! per container, and one slirp4netns attached once for the way out (to the host's loopback
//! through 10.0.2.2, DNS through 10.0.2.3, the world through the host's connection).
//!
//! Lifetime: `berth run --network NAME` connects to the daemon's control socket (starting it
//! when there is none) and keeps the connection open while its container runs. The daemon
//! counts connections: when the last one closes (the container ended, or its berth was killed:
//! the kernel closes the socket either way) it exits, and slirp4netns and the namespaces go
//! with it. A lock file orders "connect or start" against "exit when idle", so a container
//! never joins a daemon that is leaving.
//!
//! Containers on a user-defined network join the daemon's user namespace (so that it may move
//! a veth into their network namespace) and make their own network namespace in it. Names
//! resolve through each container's /etc/hosts, which the daemon rewrites in place as
//! containers come and go. Routed traffic between two bridges is dropped (iptables), so
//! networks do not reach each other.
//!
//! A microVM joins a network through a tap device instead of a veth: the daemon creates it in
//! its network namespace, puts it on the network's bridge, gives the VM an address, and hands
//! the tap's descriptor to berth over the control socket (SCM_RIGHTS). The VMM thus needs no
//! namespace of its own; the tap is not persistent, so it goes when the VMM's descriptor
//! closes (the VM ended, or berth was killed). Traffic from a tap is routed through the
//! bridge's address like a veth's, so the rule between bridges covers VMs too.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};

use super::hosts::{self, EtcView};
use super::slirp4netns::{self, log_tail, Slirp4netns};
use super::{Identity, NetError, NetworkConfig};
use crate::container::userns::{self, Forked};
use crate::container::IdMapping;
use crate::paths::Dirs;

/// How long a starting daemon may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// The MTU of bridges and veths (as slirp4netns's tap).
const MTU: &str = "65520";

/// Takes an flock on `path` (created if missing); with `wait` false, None when it is taken.
pub fn flock(path: &Path, wait: bool) -> Result<Option<std::fs::File>, NetError> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(super::io("opening", path))?;
    let op = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), op) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        return Err(NetError::Io {
            what: "locking",
            path: path.to_path_buf(),
            source: e,
        });
    }
    Ok(Some(f))
}

/// The daemon's files under `$XDG_RUNTIME_DIR/berth/netns/`.
struct Files {
    dir: PathBuf,
    lock: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

fn files(dirs: &Dirs) -> Files {
    let dir = dirs.runtime.join("netns");
    Files {
        lock: dir.join("lock"),
        socket: dir.join("control.sock"),
        log: dir.join("daemon.log"),
        dir,
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Request {
    Hello,
    Attach {
        network: NetworkConfig,
        pid: i32,
        names: Vec<String>,
        hosts: PathBuf,
    },
    /// A microVM: a tap on the network's bridge, its descriptor sent with the reply.
    AttachTap {
        network: NetworkConfig,
        names: Vec<String>,
        hosts: PathBuf,
    },
    /// A running container already on a network of this daemon (`pid`) joins another one
    /// through a further interface; it stays there until disconnected or gone.
    Connect {
        network: NetworkConfig,
        pid: i32,
        names: Vec<String>,
        hosts: PathBuf,
    },
    /// The container `pid` leaves network `network_id`.
    Disconnect {
        network_id: String,
        pid: i32,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip: Option<Ipv4Addr>,
}

fn daemon_err(e: impl std::fmt::Display) -> NetError {
    NetError::Daemon(e.to_string())
}

fn exchange(stream: &UnixStream, req: &Request) -> Result<Reply, NetError> {
    let mut line = serde_json::to_string(req).map_err(daemon_err)?;
    line.push('\n');
    (&*stream).write_all(line.as_bytes()).map_err(daemon_err)?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(daemon_err)?;
    if reply.is_empty() {
        return Err(daemon_err("it closed the connection"));
    }
    let r: Reply = serde_json::from_str(&reply).map_err(daemon_err)?;
    if !r.ok {
        return Err(NetError::Daemon(r.error.unwrap_or_default()));
    }
    Ok(r)
}

// --- the client side: berth run --network NAME ------------------------------------------------

/// A container on its way into a user-defined network: the daemon is running and counts
/// this connection, so it stays until the container is gone.
#[derive(Debug)]
pub struct Join {
    stream: UnixStream,
    daemon_pid: i32,
    config: NetworkConfig,
    names: Vec<String>,
    hosts_file: PathBuf,
}

/// A container on a user-defined network; the daemon forgets it when this is dropped.
#[derive(Debug)]
pub struct Membership {
    _stream: UnixStream,
    ip: Ipv4Addr,
}

impl Membership {
    pub fn address(&self) -> IpAddr {
        IpAddr::V4(self.ip)
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The connection that keeps the container on the network (see [`super::Helpers`]).
    pub(crate) fn into_fd(self) -> OwnedFd {
        OwnedFd::from(self._stream)
    }
}

impl Join {
    /// Connects to the user's network daemon, starting it when it is not running.
    pub fn new(
        dirs: &Dirs,
        config: NetworkConfig,
        who: &Identity,
        aliases: &[String],
    ) -> Result<Join, NetError> {
        super::Backend::Slirp4netns.program()?;
        let f = files(dirs);
        std::fs::create_dir_all(&f.dir).map_err(super::io("creating", &f.dir))?;
        let lock = flock(&f.lock, true)?;
        let (stream, daemon_pid) = match UnixStream::connect(&f.socket)
            .ok()
            .and_then(|s| hello(&s).ok().map(|pid| (s, pid)))
        {
            Some(found) => found,
            None => start_daemon(&f)?,
        };
        drop(lock);
        let mut names = vec![who.hostname.to_string()];
        if who.name != who.hostname {
            names.push(who.name.to_string());
        }
        for a in aliases {
            if !names.contains(a) {
                names.push(a.clone());
            }
        }
        Ok(Join {
            stream,
            daemon_pid,
            config,
            names,
            hosts_file: who.hosts_file.clone(),
        })
    }

    /// The network being joined.
    pub fn network(&self) -> &NetworkConfig {
        &self.config
    }

    /// The daemon's user namespace, which the container joins.
    pub fn userns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/user", self.daemon_pid))
    }

    /// The /etc view before the container has an address (the daemon completes its hosts file).
    pub fn initial_view(&self) -> EtcView {
        bridge_view()
    }

    /// Asks the daemon to connect the network namespace of `pid` to the network.
    pub fn attach(&mut self, pid: i32) -> Result<Membership, NetError> {
        let reply = exchange(
            &self.stream,
            &Request::Attach {
                network: self.config.clone(),
                pid,
                names: self.names.clone(),
                hosts: self.hosts_file.clone(),
            },
        )?;
        let ip = reply
            .ip
            .ok_or_else(|| daemon_err("it gave the container no address"))?;
        Ok(Membership {
            _stream: self.stream.try_clone().map_err(daemon_err)?,
            ip,
        })
    }
}

/// Asks the running daemon (a container on one of its networks keeps it running) for a
/// connection of its own; no daemon means the container is on none of its networks.
fn running_daemon(dirs: &Dirs) -> Result<UnixStream, NetError> {
    let f = files(dirs);
    let stream = UnixStream::connect(&f.socket).map_err(|_| {
        daemon_err(
            "it is not running, so the container is on none of berth's user-defined networks",
        )
    })?;
    let _ = stream.set_read_timeout(Some(START_TIMEOUT));
    Ok(stream)
}

/// Connects the running container `pid`, already on a user-defined network, to `network`
/// too (a further interface, its address returned); it stays there while it runs, or until
/// [`disconnect_running`].
pub fn connect_running(
    dirs: &Dirs,
    pid: i32,
    network: NetworkConfig,
    names: Vec<String>,
    hosts: PathBuf,
) -> Result<Ipv4Addr, NetError> {
    let stream = running_daemon(dirs)?;
    let reply = exchange(
        &stream,
        &Request::Connect {
            network,
            pid,
            names,
            hosts,
        },
    )?;
    reply
        .ip
        .ok_or_else(|| daemon_err("it gave the container no address"))
}

/// Takes the running container `pid` off network `network_id`.
pub fn disconnect_running(dirs: &Dirs, pid: i32, network_id: &str) -> Result<(), NetError> {
    let stream = running_daemon(dirs)?;
    exchange(
        &stream,
        &Request::Disconnect {
            network_id: network_id.to_string(),
            pid,
        },
    )?;
    Ok(())
}

/// A microVM on a user-defined network: its tap (to hand to the VMM) and its address. The
/// daemon forgets the VM when this is dropped.
#[derive(Debug)]
pub struct TapMembership {
    _stream: UnixStream,
    pub ip: Ipv4Addr,
    pub tap: OwnedFd,
}

impl Join {
    /// The daemon's network namespace, where the bridges are (the forwarder of published
    /// ports reaches a VM from there).
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.daemon_pid))
    }

    /// Asks the daemon for a tap on the network's bridge, for a microVM.
    pub fn attach_tap(self) -> Result<TapMembership, NetError> {
        let req = Request::AttachTap {
            network: self.config.clone(),
            names: self.names.clone(),
            hosts: self.hosts_file.clone(),
        };
        let (reply, fd) = exchange_with_fd(&self.stream, &req)?;
        let ip = reply
            .ip
            .ok_or_else(|| daemon_err("it gave the VM no address"))?;
        let tap = fd.ok_or_else(|| daemon_err("it sent no tap descriptor"))?;
        Ok(TapMembership {
            _stream: self.stream,
            ip,
            tap,
        })
    }
}

/// As [`exchange`], for a reply that carries a descriptor (SCM_RIGHTS) with its first bytes.
fn exchange_with_fd(
    stream: &UnixStream,
    req: &Request,
) -> Result<(Reply, Option<OwnedFd>), NetError> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut line = serde_json::to_string(req).map_err(daemon_err)?;
    line.push('\n');
    (&*stream).write_all(line.as_bytes()).map_err(daemon_err)?;
    let mut reply = Vec::new();
    let mut fd = None;
    while !reply.ends_with(b"\n") {
        let mut buf = [0u8; 4096];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(daemon_err)?;
        for c in msg.cmsgs().map_err(daemon_err)? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for raw in fds {
                    // SAFETY: the kernel just installed this descriptor for us; nobody else
                    // owns it.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    if fd.is_none() {
                        fd = Some(owned);
                    }
                }
            }
        }
        let n = msg.bytes;
        if n == 0 {
            return Err(daemon_err("it closed the connection"));
        }
        reply.extend_from_slice(&buf[..n]);
        if reply.len() > 1 << 16 {
            return Err(daemon_err("its reply has no end"));
        }
    }
    let r: Reply = serde_json::from_slice(&reply).map_err(daemon_err)?;
    if !r.ok {
        return Err(NetError::Daemon(r.error.unwrap_or_default()));
    }
    Ok((r, fd))
}

/// The /etc view of a sandbox on a user-defined network before it has an address: the host
/// and DNS through the daemon's slirp4netns (the daemon completes the hosts file).
pub fn bridge_view() -> EtcView {
    EtcView {
        own: None,
        gateway: Some(IpAddr::V4(slirp4netns::GATEWAY)),
        peers: vec![],
        nameserver: Some(IpAddr::V4(slirp4netns::DNS)),
    }
}

fn hello(stream: &UnixStream) -> Result<i32, NetError> {
    let _ = stream.set_read_timeout(Some(START_TIMEOUT));
    let r = exchange(stream, &Request::Hello)?;
    let _ = stream.set_read_timeout(None);
    r.pid.ok_or_else(|| daemon_err("it did not say its pid"))
}

/// Starts `berth netns-daemon` in a session of its own (a Ctrl-C for one `berth run` must not
/// stop every network) and waits until it listens. Called with the lock held.
fn start_daemon(f: &Files) -> Result<(UnixStream, i32), NetError> {
    let _ = std::fs::remove_file(&f.socket);
    let exe = std::env::current_exe().map_err(super::io("finding", Path::new("berth")))?;
    let log = std::fs::File::create(&f.log).map_err(super::io("creating", &f.log))?;
    let mut cmd = Command::new(exe);
    cmd.arg("netns-daemon")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| daemon_err(format!("cannot start it: {e}")))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(s) = UnixStream::connect(&f.socket) {
            let pid = hello(&s)?;
            // The daemon outlives this berth; the kernel reaps it once we exit.
            std::mem::forget(child);
            return Ok((s, pid));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(daemon_err(format!(
                "it exited ({status}): {}",
                log_tail(&f.log)
            )));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(daemon_err(format!(
                "it did not listen within {START_TIMEOUT:?}: {}",
                log_tail(&f.log)
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

// --- the daemon -----------------------------------------------------------------------------

/// `berth netns-daemon`: the outer process stays in the host's namespaces (slirp4netns must
/// start there), the inner one holds the rootless user and network namespaces and serves the
/// control socket. Returns the exit status.
pub fn daemon_main(dirs: &Dirs, ids: &IdMapping) -> i32 {
    match run_daemon(dirs, ids) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth netns-daemon: {e}");
            1
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), NetError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(daemon_err)
}

fn run_daemon(dirs: &Dirs, ids: &IdMapping) -> Result<(), NetError> {
    let f = files(dirs);
    let (sync_rd, sync_wr) = pipe()?;
    let (go_rd, go_wr) = pipe()?;
    let flags = userns::userns_flag(ids) | CloneFlags::CLONE_NEWNET;
    match userns::clone_fork(flags).map_err(daemon_err)? {
        Forked::Child => {
            drop(sync_wr);
            drop(go_wr);
            userns::set_parent_death_signal();
            let result = userns::child_wait_for_maps(sync_rd, ids)
                .map_err(daemon_err)
                .and_then(|()| {
                    let mut b = [0u8; 1];
                    match std::fs::File::from(go_rd).read(&mut b) {
                        Ok(1) => Ok(()),
                        _ => Err(daemon_err("slirp4netns did not start")),
                    }
                })
                .and_then(|()| Inner::new(&f)?.serve(&f));
            if let Err(e) = result {
                eprintln!("berth netns-daemon: {e}");
                userns::child_exit(1);
            }
            userns::child_exit(0)
        }
        Forked::Parent(inner) => {
            drop(sync_rd);
            drop(go_rd);
            userns::parent_write_maps(inner, ids, sync_wr).map_err(daemon_err)?;
            let pid = inner.as_raw();
            let userns_path = PathBuf::from(format!("/proc/{pid}/ns/user"));
            let slirp = Slirp4netns::start(
                ids.uses_userns().then_some(userns_path.as_path()),
                Path::new(&format!("/proc/{pid}/ns/net")),
                None,
                &f.dir.join("slirp4netns.log"),
            );
            let slirp = match slirp {
                Ok(s) => s,
                Err(e) => {
                    let _ = nix::sys::signal::kill(inner, nix::sys::signal::Signal::SIGKILL);
                    let _ = userns::wait_retry(inner);
                    return Err(e);
                }
            };
            let _ = std::fs::File::from(go_wr).write_all(b"1");
            let _ = userns::wait_retry(inner);
            drop(slirp);
            Ok(())
        }
    }
}

/// Runs `ip -batch -` with `commands`, in the network namespace `netns` when given.
fn ip_batch(commands: &[String], netns: Option<&OwnedFd>) -> Result<(), NetError> {
    let mut cmd = Command::new(super::which("ip").ok_or(NetError::ToolMissing {
        tool: "ip",
        package: "iproute2",
    })?);
    cmd.args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(fd) = netns {
        let raw = fd.as_raw_fd();
        // SAFETY: setns is async-signal-safe; the descriptor outlives the spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(|e| NetError::Tool {
        tool: "ip",
        message: e.to_string(),
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(commands.join("\n").as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| NetError::Tool {
        tool: "ip",
        message: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(NetError::Tool {
            tool: "ip",
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn iptables(args: &[&str]) -> Result<(), NetError> {
    let program = super::which("iptables").ok_or(NetError::ToolMissing {
        tool: "iptables",
        package: "iptables",
    })?;
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NetError::Tool {
            tool: "iptables",
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(NetError::Tool {
            tool: "iptables",
            message: format!(
                "{}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

/// The network namespace of process `pid`: (device, inode) of /proc/PID/ns/net.
fn netns_of(pid: i32) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(format!("/proc/{pid}/ns/net")).ok()?;
    Some((m.dev(), m.ino()))
}

/// The reply to a request that succeeded (with the address it gave) or failed.
fn answer(result: Result<Option<Ipv4Addr>, NetError>) -> Reply {
    match result {
        Ok(ip) => Reply {
            ok: true,
            ip,
            ..Reply::default()
        },
        Err(e) => Reply {
            error: Some(e.to_string()),
            ..Reply::default()
        },
    }
}

/// A container the daemon has connected (to one network: a container on two is two members).
struct Member {
    /// The connection whose end takes the member with it.
    owner: u64,
    /// The container's network namespace (device, inode), for a veth (None for a VM's tap):
    /// what tells a container asked for by any of its processes.
    netns: Option<(u64, u64)>,
    network: NetworkConfig,
    ip: Ipv4Addr,
    names: Vec<String>,
    hosts: PathBuf,
    /// The host side of its link: a veth, or a VM's tap.
    link: String,
    /// The container's side of a veth (`eth0`, `eth1`, ...).
    iface: String,
}

/// How a member is linked to its network's bridge.
enum Link {
    /// A veth pair, the peer moved into the network namespace of `pid` as `iface` (eth0 for
    /// the first network, the one with the default route).
    Veth { pid: i32, iface: String },
    /// A tap device whose descriptor goes to a microVM's VMM.
    Tap,
}

/// Creates a tap device `name` (`IFF_TAP | IFF_NO_PI`: plain Ethernet frames) in this
/// network namespace. Not persistent: it disappears with the last descriptor.
fn create_tap(name: &str) -> Result<OwnedFd, NetError> {
    let dev = Path::new("/dev/net/tun");
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(dev)
        .map_err(super::io("opening", dev))?;
    if name.len() >= libc::IFNAMSIZ {
        return Err(daemon_err(format!("tap name {name} is too long")));
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads an ifreq from a valid pointer, alive for the call.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
        return Err(NetError::Io {
            what: "creating a tap device with",
            path: dev.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(OwnedFd::from(tun))
}

/// Writes `data` with `fd` attached (SCM_RIGHTS).
fn send_with_fd(stream: &UnixStream, data: &[u8], fd: &OwnedFd) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [std::io::IoSlice::new(data)];
    let n = sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .map_err(std::io::Error::from)?;
    // The rest (if any) without the descriptor, which went with the first bytes.
    (&*stream).write_all(&data[n..])
}

struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

/// The daemon inside the rootless namespaces.
struct Inner {
    listener: UnixListener,
    conns: HashMap<u64, Conn>,
    members: HashMap<u64, Member>,
    bridges: Vec<String>,
    next: u64,
}

impl Inner {
    fn new(f: &Files) -> Result<Inner, NetError> {
        ip_batch(&["link set lo up".to_string()], None)?;
        let fwd = Path::new("/proc/sys/net/ipv4/ip_forward");
        std::fs::write(fwd, "1").map_err(super::io("enabling forwarding in", fwd))?;
        // Out through slirp4netns with the tap's address; never from one bridge to another.
        iptables(&[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "tap0",
            "-j",
            "MASQUERADE",
        ])?;
        iptables(&["-A", "FORWARD", "-i", "brth+", "-o", "brth+", "-j", "DROP"])?;
        let _ = std::fs::remove_file(&f.socket);
        let listener =
            UnixListener::bind(&f.socket).map_err(super::io("listening on", &f.socket))?;
        listener.set_nonblocking(true).map_err(daemon_err)?;
        Ok(Inner {
            listener,
            conns: HashMap::new(),
            members: HashMap::new(),
            bridges: vec![],
            next: 1,
        })
    }

    fn serve(mut self, f: &Files) -> Result<(), NetError> {
        loop {
            let ids: Vec<u64> = self.conns.keys().copied().collect();
            let mut fds = vec![libc::pollfd {
                fd: self.listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            for id in &ids {
                fds.push(libc::pollfd {
                    fd: self.conns[id].stream.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            let timeout = if self.conns.is_empty() { 20 } else { -1 };
            // SAFETY: fds is a valid array of pollfd for the duration of the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                continue;
            }
            if fds[0].revents != 0 {
                self.accept_all();
            }
            for (i, id) in ids.iter().enumerate() {
                if fds[i + 1].revents != 0 {
                    self.read_conn(*id);
                }
            }
            if self.conns.is_empty() {
                // Idle: leave, unless a client is connecting right now (it holds the lock).
                if let Some(lock) = flock(&f.lock, false)? {
                    self.accept_all();
                    if self.conns.is_empty() {
                        let _ = std::fs::remove_file(&f.socket);
                        drop(lock);
                        return Ok(());
                    }
                }
            }
        }
    }

    fn accept_all(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            let _ = stream.set_nonblocking(true);
            self.conns.insert(
                self.next,
                Conn {
                    stream,
                    buf: vec![],
                },
            );
            self.next += 1;
        }
    }

    fn read_conn(&mut self, id: u64) {
        let mut chunk = [0u8; 4096];
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let closed = match conn.stream.read(&mut chunk) {
            Ok(0) => true,
            Ok(n) => {
                conn.buf.extend_from_slice(&chunk[..n]);
                false
            }
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        };
        while let Some(pos) = self
            .conns
            .get(&id)
            .and_then(|c| c.buf.iter().position(|b| *b == b'\n'))
        {
            let line: Vec<u8> = self
                .conns
                .get_mut(&id)
                .map(|c| c.buf.drain(..=pos).collect())
                .unwrap_or_default();
            let (reply, fd) = match serde_json::from_slice::<Request>(&line) {
                Ok(req) => self.handle(id, req),
                Err(e) => (
                    Reply {
                        error: Some(format!("bad request: {e}")),
                        ..Reply::default()
                    },
                    None,
                ),
            };
            if let Some(c) = self.conns.get_mut(&id) {
                let mut text = serde_json::to_string(&reply).unwrap_or_default();
                text.push('\n');
                let _ = c.stream.set_nonblocking(false);
                let _ = match &fd {
                    Some(fd) => send_with_fd(&c.stream, text.as_bytes(), fd),
                    None => c.stream.write_all(text.as_bytes()),
                };
                let _ = c.stream.set_nonblocking(true);
            }
            // The daemon keeps no copy of a tap's descriptor: the VMM's is the last, so the tap
            // goes when the VMM does.
            drop(fd);
        }
        if closed {
            self.conns.remove(&id);
            self.leave(id);
        }
    }

    fn handle(&mut self, id: u64, req: Request) -> (Reply, Option<OwnedFd>) {
        match req {
            Request::Hello => (
                Reply {
                    ok: true,
                    pid: Some(std::process::id() as i32),
                    ..Reply::default()
                },
                None,
            ),
            Request::Attach {
                network,
                pid,
                names,
                hosts,
            } => {
                let link = Link::Veth {
                    pid,
                    iface: "eth0".into(),
                };
                let joined = self.join(id, network, link, names, hosts);
                (answer(joined.map(|(ip, _)| Some(ip))), None)
            }
            Request::AttachTap {
                network,
                names,
                hosts,
            } => match self.join(id, network, Link::Tap, names, hosts) {
                Ok((ip, tap)) => (answer(Ok(Some(ip))), tap),
                Err(e) => (answer(Err(e)), None),
            },
            Request::Connect {
                network,
                pid,
                names,
                hosts,
            } => (
                answer(self.connect(network, pid, names, hosts).map(Some)),
                None,
            ),
            Request::Disconnect { network_id, pid } => (
                answer(self.disconnect(&network_id, pid).map(|()| None)),
                None,
            ),
        }
    }

    /// Joins the running container `pid` (any process in its network namespace) to one more
    /// network, through the next free `ethN`; the member goes with the connection that
    /// brought the container here.
    fn connect(
        &mut self,
        network: NetworkConfig,
        pid: i32,
        names: Vec<String>,
        hosts: PathBuf,
    ) -> Result<Ipv4Addr, NetError> {
        let ns = netns_of(pid);
        let mine: Vec<&Member> = self
            .members
            .values()
            .filter(|m| ns.is_some() && m.netns == ns)
            .collect();
        let owner = mine.first().map(|m| m.owner).ok_or_else(|| {
            daemon_err("the container is on none of berth's user-defined networks")
        })?;
        if mine.iter().any(|m| m.network.id == network.id) {
            return Err(daemon_err(format!(
                "the container is on network {} already",
                network.name
            )));
        }
        let iface = (1..)
            .map(|n| format!("eth{n}"))
            .find(|i| !mine.iter().any(|m| &m.iface == i))
            .unwrap_or_default();
        let (ip, _) = self.join(owner, network, Link::Veth { pid, iface }, names, hosts)?;
        Ok(ip)
    }

    fn disconnect(&mut self, network_id: &str, pid: i32) -> Result<(), NetError> {
        let ns = netns_of(pid);
        let key = self
            .members
            .iter()
            .find(|(_, m)| ns.is_some() && m.netns == ns && m.network.id == network_id)
            .map(|(k, _)| *k)
            .ok_or_else(|| daemon_err("the container is not on that network"))?;
        self.drop_member(key);
        Ok(())
    }

    fn ensure_bridge(&mut self, n: &NetworkConfig) -> Result<(), NetError> {
        let br = n.bridge();
        if self.bridges.contains(&br) {
            return Ok(());
        }
        ip_batch(
            &[
                format!("link add {br} mtu {MTU} type bridge"),
                format!("addr add {}/{} dev {br}", n.gateway, n.prefix),
                format!("link set {br} up"),
            ],
            None,
        )?;
        // Where the host has br_netfilter, traffic inside one bridge passes FORWARD too:
        // let it through before the rule that drops what goes from one bridge to another.
        iptables(&["-I", "FORWARD", "1", "-i", &br, "-o", &br, "-j", "ACCEPT"])?;
        self.bridges.push(br);
        Ok(())
    }

    fn join(
        &mut self,
        id: u64,
        network: NetworkConfig,
        link: Link,
        names: Vec<String>,
        hosts: PathBuf,
    ) -> Result<(Ipv4Addr, Option<OwnedFd>), NetError> {
        let first = !self.members.values().any(|m| m.owner == id);
        if !first && !matches!(link, Link::Veth { .. }) {
            return Err(daemon_err("this connection is on a network already"));
        }
        self.ensure_bridge(&network)?;
        let taken: Vec<Ipv4Addr> = self
            .members
            .values()
            .filter(|m| m.network.id == network.id)
            .map(|m| m.ip)
            .collect();
        let ip = (2..)
            .map_while(|n| network.host(n))
            .find(|ip| !taken.contains(ip))
            .ok_or_else(|| {
                daemon_err(format!(
                    "network {} has no free address left in {}",
                    network.name,
                    network.cidr()
                ))
            })?;
        let br = network.bridge();
        let key = self.next;
        self.next += 1;
        let (name, tap, netns, iface) = match link {
            Link::Veth { pid, iface } => {
                let veth = format!("vth{:x}{key:x}", std::process::id() & 0xffff);
                ip_batch(
                    &[
                        format!(
                            "link add {veth} mtu {MTU} type veth peer name {iface} address {} mtu {MTU} netns {pid}",
                            super::mac_for(ip)
                        ),
                        format!("link set {veth} master {br} up"),
                    ],
                    None,
                )?;
                let ns_path = PathBuf::from(format!("/proc/{pid}/ns/net"));
                let configured = std::fs::File::open(&ns_path)
                    .map(OwnedFd::from)
                    .map_err(super::io("opening", &ns_path))
                    .and_then(|ns| {
                        let mut commands = vec![
                            format!("addr add {ip}/{} dev {iface}", network.prefix),
                            format!("link set {iface} up"),
                        ];
                        // The first network has the default route; a further one its subnet.
                        if iface == "eth0" {
                            commands.push(format!("route add default via {}", network.gateway));
                        }
                        ip_batch(&commands, Some(&ns))
                    });
                if let Err(e) = configured {
                    let _ = ip_batch(&[format!("link del {veth}")], None);
                    return Err(e);
                }
                (veth, None, netns_of(pid), iface)
            }
            Link::Tap => {
                let name = format!("btp{:x}{key:x}", std::process::id() & 0xffff);
                let tap = create_tap(&name)?;
                // The tap keeps the bridge's MTU, the one the VM's NIC offers its guest
                // (virtio-net's MTU), so frames cross the bridge whole either way.
                if let Err(e) =
                    ip_batch(&[format!("link set {name} mtu {MTU} master {br} up")], None)
                {
                    drop(tap);
                    return Err(e);
                }
                (name, Some(tap), None, String::new())
            }
        };
        self.members.insert(
            key,
            Member {
                owner: id,
                netns,
                network,
                ip,
                names,
                hosts,
                link: name,
                iface,
            },
        );
        self.refresh_hosts();
        Ok((ip, tap))
    }

    /// Connection `id` closed: its container leaves every network it was on.
    fn leave(&mut self, id: u64) {
        let keys: Vec<u64> = self
            .members
            .iter()
            .filter(|(_, m)| m.owner == id)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.drop_member(k);
        }
    }

    fn drop_member(&mut self, key: u64) {
        if let Some(m) = self.members.remove(&key) {
            // Gone with the container's namespace already, unless the container outlived us.
            let _ = ip_batch(&[format!("link del {}", m.link)], None);
            self.refresh_hosts();
        }
    }

    /// Rewrites the /etc/hosts of every container: its own address (on its first network)
    /// and names, and the containers on each network it is on.
    fn refresh_hosts(&self) {
        let mut files: Vec<&PathBuf> = self.members.values().map(|m| &m.hosts).collect();
        files.sort();
        files.dedup();
        for file in files {
            let mut mine: Vec<(&u64, &Member)> = self
                .members
                .iter()
                .filter(|(_, m)| &m.hosts == file)
                .collect();
            mine.sort_by_key(|(k, _)| **k);
            let Some((_, first)) = mine.first() else {
                continue;
            };
            let mut peers: Vec<(IpAddr, Vec<String>)> = vec![];
            for (_, m) in &mine {
                for p in self.members.values() {
                    if p.network.id == m.network.id && &p.hosts != file {
                        peers.push((IpAddr::V4(p.ip), p.names.clone()));
                    }
                }
            }
            let view = EtcView {
                own: Some((IpAddr::V4(first.ip), first.names.clone())),
                gateway: Some(IpAddr::V4(slirp4netns::GATEWAY)),
                peers,
                nameserver: None,
            };
            let _ = hosts::rewrite_in_place(file, &hosts::render_hosts(&view));
        }
    }
}
