//! Published ports: `-p [IP:][HOSTPORT:]CTRPORT[/tcp|/udp]` parsed and resolved to host
//! sockets (a port in use is an error before the container starts), and berth's port
//! forwarder: a process that holds the host sockets, enters the container's user and network
//! namespaces, and moves each connection's bytes with splice(2) between the host socket and a
//! socket connected to the container inside its namespace.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::NetError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One `-p` as written: the host side may be left to berth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub host_ip: Option<IpAddr>,
    pub host_port: Option<u16>,
    pub container_port: u16,
    pub proto: Proto,
}

/// A published port as it is: what `berth port` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl PublishedPort {
    pub fn host_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host_ip, self.host_port)
    }
}

impl std::fmt::Display for PublishedPort {
    /// Docker's `0.0.0.0:32768->80/tcp`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}->{}/{}",
            self.host_addr(),
            self.container_port,
            self.proto
        )
    }
}

fn parse_port(spec: &str, s: &str, what: &str) -> Result<u16, NetError> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(NetError::BadPort {
            spec: spec.to_string(),
            why: format!("{what} {s:?} is not a port number from 1 to 65535"),
        }),
    }
}

impl std::str::FromStr for PortSpec {
    type Err = NetError;

    /// `CTR`, `HOST:CTR`, `IP:HOST:CTR`, `IP::CTR` (any free host port), `[IPv6]:HOST:CTR`,
    /// each with an optional `/tcp` or `/udp`.
    fn from_str(spec: &str) -> Result<Self, NetError> {
        let bad = |why: &str| NetError::BadPort {
            spec: spec.to_string(),
            why: why.to_string(),
        };
        let (rest, proto) = match spec.rsplit_once('/') {
            Some((r, "tcp")) => (r, Proto::Tcp),
            Some((r, "udp")) => (r, Proto::Udp),
            Some((_, p)) => return Err(bad(&format!("unknown protocol {p:?}: use tcp or udp"))),
            None => (spec, Proto::Tcp),
        };
        // An IPv6 address is written in brackets.
        let (host_ip, rest) = if let Some(r) = rest.strip_prefix('[') {
            let (ip, r) = r
                .split_once("]:")
                .ok_or_else(|| bad("expected [IPv6]:HOSTPORT:CTRPORT"))?;
            let ip: IpAddr = ip.parse().map_err(|_| bad("invalid IPv6 address"))?;
            (Some(ip), r)
        } else {
            (None, rest)
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let (ip, host, ctr) = match (host_ip, parts.as_slice()) {
            (None, [c]) => (None, None, *c),
            (None, [h, c]) => (None, Some(*h), *c),
            (None, [ip, h, c]) => {
                let ip: IpAddr = ip
                    .parse()
                    .map_err(|_| bad(&format!("{ip:?} is not an IP address")))?;
                (Some(ip), Some(*h), *c)
            }
            (Some(ip), [h, c]) => (Some(ip), Some(*h), *c),
            _ => return Err(bad("expected [IP:][HOSTPORT:]CTRPORT[/tcp|/udp]")),
        };
        if ctr.contains('-') || host.is_some_and(|h| h.contains('-')) {
            return Err(bad("port ranges are not supported: give one -p per port"));
        }
        Ok(PortSpec {
            host_ip: ip,
            host_port: match host {
                None | Some("") => None,
                Some(h) => Some(parse_port(spec, h, "host port")?),
            },
            container_port: parse_port(spec, ctr, "container port")?,
            proto,
        })
    }
}

/// The image's `EXPOSE` entries (`80/tcp`, `53/udp`, `8080`) as `-P` publishes them: each on
/// a free host port on all addresses.
pub fn exposed(list: &[String]) -> Result<Vec<PortSpec>, NetError> {
    list.iter()
        .map(|e| {
            let mut p: PortSpec = e.parse()?;
            p.host_port = None;
            p.host_ip = None;
            Ok(p)
        })
        .collect()
}

/// A host socket bound for a published port.
#[derive(Debug)]
pub enum HostSocket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

fn bind(addr: SocketAddr, proto: Proto, spec_ctr: u16) -> Result<HostSocket, NetError> {
    let res = match proto {
        Proto::Tcp => TcpListener::bind(addr).map(HostSocket::Tcp),
        Proto::Udp => UdpSocket::bind(addr).map(HostSocket::Udp),
    };
    res.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            NetError::PortInUse {
                addr,
                proto,
                other: addr.port().wrapping_add(1).max(1024),
                ctr: spec_ctr,
            }
        } else if source.kind() == std::io::ErrorKind::PermissionDenied && addr.port() < 1024 {
            NetError::Bind {
                addr,
                proto,
                source: std::io::Error::other(format!(
                    "{source}: ports below {} need privilege on the host; publish on a higher host port (e.g. -p {}:{spec_ctr})",
                    unprivileged_port_start(),
                    addr.port() as u32 + 8000
                )),
            }
        } else {
            NetError::Bind {
                addr,
                proto,
                source,
            }
        }
    })
}

fn unprivileged_port_start() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "1024".into())
}

/// Binds a host socket for each spec (a free port where none is given), so that a port in use
/// fails the run before anything starts. Returns the ports as published and their sockets.
pub fn bind_all(specs: &[PortSpec]) -> Result<Vec<(PublishedPort, HostSocket)>, NetError> {
    let mut out: Vec<(PublishedPort, HostSocket)> = Vec::new();
    for s in specs {
        let ip = s.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let addr = SocketAddr::new(ip, s.host_port.unwrap_or(0));
        if let Some((p, _)) = out
            .iter()
            .find(|(p, _)| p.proto == s.proto && s.host_port == Some(p.host_port))
        {
            return Err(NetError::BadPort {
                spec: format!("{}:{}", p.host_port, s.container_port),
                why: format!("host port {} is published twice", p.host_port),
            });
        }
        let sock = bind(addr, s.proto, s.container_port)?;
        let local = match &sock {
            HostSocket::Tcp(l) => l.local_addr(),
            HostSocket::Udp(u) => u.local_addr(),
        }
        .map_err(|source| NetError::Bind {
            addr,
            proto: s.proto,
            source,
        })?;
        out.push((
            PublishedPort {
                host_ip: ip,
                host_port: local.port(),
                container_port: s.container_port,
                proto: s.proto,
            },
            sock,
        ));
    }
    Ok(out)
}

/// berth's port forwarder: a child process in the container's user and network namespaces
/// that holds the host sockets. It dies with berth (parent-death signal) and is killed when
/// dropped.
#[derive(Debug)]
pub struct Forwarder {
    pid: Pid,
}

impl Forwarder {
    /// Starts forwarding `ports` to `target` (the container's address, reached inside the
    /// network namespace `netns`, entered after the user namespace `userns`).
    pub fn start(
        userns: Option<&Path>,
        netns: &Path,
        target: IpAddr,
        ports: Vec<(PublishedPort, HostSocket)>,
    ) -> Result<Forwarder, NetError> {
        let open = |p: &Path| -> Result<OwnedFd, NetError> {
            std::fs::File::open(p)
                .map(OwnedFd::from)
                .map_err(super::io("opening", p))
        };
        let user_fd = userns.map(open).transpose()?;
        let net_fd = open(netns)?;
        let (rd, wr) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| NetError::Tool {
                tool: "port forwarder",
                message: format!("pipe: {e}"),
            })?;
        let parent = nix::unistd::getpid();
        // SAFETY: fork in a single-threaded process (berth runs a container from its main
        // thread only); the child runs only code that is safe after fork.
        match unsafe { nix::unistd::fork() } {
            Err(e) => Err(NetError::Tool {
                tool: "port forwarder",
                message: format!("fork: {e}"),
            }),
            Ok(nix::unistd::ForkResult::Child) => {
                drop(rd);
                // SAFETY: prctl with integer arguments only.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
                if nix::unistd::getppid() != parent {
                    // SAFETY: _exit never returns and runs no destructors of the parent's copy.
                    unsafe { libc::_exit(0) }
                }
                // Only what the forwarder uses stays open: a detached container's monitor
                // forks it while holding the container's output pipes, its lock and its
                // socket, which must not live on in the forwarder.
                let mut keep: Vec<RawFd> = ports
                    .iter()
                    .map(|(_, s)| match s {
                        HostSocket::Tcp(l) => l.as_raw_fd(),
                        HostSocket::Udp(u) => u.as_raw_fd(),
                    })
                    .collect();
                keep.push(wr.as_raw_fd());
                keep.push(net_fd.as_raw_fd());
                keep.extend(user_fd.as_ref().map(|f| f.as_raw_fd()));
                close_all_but(&keep);
                let mut wr = std::fs::File::from(wr);
                let entered = enter(user_fd.as_ref(), &net_fd);
                match entered {
                    Ok(()) => {
                        let _ = wr.write_all(b"1");
                        drop(wr);
                        serve(target, ports)
                    }
                    Err(e) => {
                        let _ = wr.write_all(format!("0{e}").as_bytes());
                        // SAFETY: as above.
                        unsafe { libc::_exit(1) }
                    }
                }
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                drop(wr);
                drop(ports);
                let mut msg = String::new();
                let _ = std::fs::File::from(rd).read_to_string(&mut msg);
                let fwd = Forwarder { pid: child };
                if msg == "1" {
                    Ok(fwd)
                } else {
                    Err(NetError::Tool {
                        tool: "port forwarder",
                        message: format!(
                            "entering the container's network namespace: {}",
                            msg.get(1..).unwrap_or("it exited")
                        ),
                    })
                }
            }
        }
    }
}

impl Forwarder {
    /// Leaves it running (see [`super::Helpers`]) and returns its pid.
    pub(crate) fn keep_running(self) -> i32 {
        std::mem::ManuallyDrop::new(self).pid.as_raw()
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        // Waited for: the host ports are free once berth returns.
        let _ = kill(self.pid, Signal::SIGKILL);
        let _ = waitpid(self.pid, None);
    }
}

/// In a forked child: stdio to /dev/null, every other descriptor but `keep` closed.
fn close_all_but(keep: &[RawFd]) {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of this process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    for fd in open {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: closing a descriptor this child inherited and does not use.
            unsafe { libc::close(fd) };
        }
    }
}

fn setns(fd: &OwnedFd, nstype: libc::c_int) -> Result<(), String> {
    // SAFETY: setns on a namespace descriptor we own.
    if unsafe { libc::setns(fd.as_raw_fd(), nstype) } != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(())
}

fn enter(user: Option<&OwnedFd>, net: &OwnedFd) -> Result<(), String> {
    if let Some(u) = user {
        setns(u, libc::CLONE_NEWUSER).map_err(|e| format!("user namespace: {e}"))?;
    }
    setns(net, libc::CLONE_NEWNET).map_err(|e| format!("network namespace: {e}"))
}

/// The forwarder's life: one thread per host socket, forever (until killed).
fn serve(target: IpAddr, ports: Vec<(PublishedPort, HostSocket)>) -> ! {
    let mut threads = Vec::new();
    for (p, sock) in ports {
        let to = SocketAddr::new(target, p.container_port);
        threads.push(std::thread::spawn(move || match sock {
            HostSocket::Tcp(l) => tcp_accept_loop(l, to),
            HostSocket::Udp(u) => udp_relay(u, to),
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    // SAFETY: _exit never returns.
    unsafe { libc::_exit(0) }
}

fn tcp_accept_loop(listener: TcpListener, to: SocketAddr) {
    loop {
        let Ok((client, _)) = listener.accept() else {
            continue;
        };
        std::thread::spawn(move || {
            let Ok(server) = TcpStream::connect(to) else {
                // The container does not listen (yet): the client sees the connection close.
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (c2, s2) = match (client.try_clone(), server.try_clone()) {
                (Ok(c), Ok(s)) => (c, s),
                _ => return,
            };
            let back = std::thread::spawn(move || pump(&s2, &c2));
            pump(&client, &server);
            let _ = back.join();
        });
    }
}

/// Moves bytes from `from` to `to` through a pipe with splice(2) until EOF, then half-closes.
fn pump(from: &TcpStream, to: &TcpStream) {
    let Ok((pr, pw)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
        return;
    };
    // SAFETY: fcntl on a pipe we own; a larger pipe means fewer splice calls.
    unsafe { libc::fcntl(pw.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
    // No SPLICE_F_MORE: on the socket side it corks small writes for up to 200 ms.
    let flags = libc::SPLICE_F_MOVE;
    'outer: loop {
        // SAFETY: splice between descriptors we own, with null offsets (sockets and pipes).
        let n = unsafe {
            libc::splice(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                pw.as_raw_fd(),
                std::ptr::null_mut(),
                1 << 20,
                flags,
            )
        };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            break;
        }
        let mut left = n as usize;
        while left > 0 {
            // SAFETY: as above.
            let m = unsafe {
                libc::splice(
                    pr.as_raw_fd(),
                    std::ptr::null_mut(),
                    to.as_raw_fd(),
                    std::ptr::null_mut(),
                    left,
                    flags,
                )
            };
            if m < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if m <= 0 {
                break 'outer;
            }
            left -= m as usize;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
    let _ = from.shutdown(std::net::Shutdown::Read);
}

/// How long a UDP client's flow stays open without traffic.
const UDP_IDLE: Duration = Duration::from_secs(60);

/// UDP: one socket in the container's namespace per client address, connected to the
/// container's port; replies go back to that client from the published socket.
fn udp_relay(host: UdpSocket, to: SocketAddr) {
    let host = Arc::new(host);
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = host.recv_from(&mut buf) else {
            continue;
        };
        let existing = flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&client)
            .cloned();
        let flow = match existing {
            Some(f) => f,
            None => {
                let local = match to {
                    SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
                    SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
                };
                let Ok(sock) = UdpSocket::bind(local) else {
                    continue;
                };
                if sock.connect(to).is_err() {
                    continue;
                }
                let _ = sock.set_read_timeout(Some(UDP_IDLE));
                let sock = Arc::new(sock);
                flows
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(client, Arc::clone(&sock));
                let (host, flows, reader) = (Arc::clone(&host), Arc::clone(&flows), sock.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = reader.recv(&mut buf) {
                        let _ = host.send_to(&buf[..n], client);
                    }
                    flows
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&client);
                });
                sock
            }
        };
        let _ = flow.send(&buf[..n]);
    }
}

/// Closes the host sockets so that another process (pasta, slirp4netns) can bind the ports.
pub fn release(ports: Vec<(PublishedPort, HostSocket)>) -> Vec<PublishedPort> {
    ports
        .into_iter()
        .map(|(p, s)| {
            drop(s);
            p
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PortSpec {
        s.parse().unwrap()
    }

    #[test]
    fn port_specs_parse_as_docker_does() {
        assert_eq!(
            p("80"),
            PortSpec {
                host_ip: None,
                host_port: None,
                container_port: 80,
                proto: Proto::Tcp
            }
        );
        assert_eq!(p("8080:80").host_port, Some(8080));
        let s = p("127.0.0.1:8080:80/udp");
        assert_eq!(s.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(s.proto, Proto::Udp);
        assert_eq!(p("127.0.0.1::80").host_port, None);
        assert_eq!(p("[::1]:8080:80").host_ip, Some("::1".parse().unwrap()));
        for bad in [
            "0",
            "x",
            "70000",
            "1:2:3:4",
            "80/sctp",
            "1000-1010:80",
            "a.b:1:2",
        ] {
            assert!(bad.parse::<PortSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_port_in_use_is_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let spec = p(&format!("127.0.0.1:{port}:80"));
        let err = bind_all(&[spec]).unwrap_err().to_string();
        assert!(err.contains("already in use"), "{err}");
        let free = bind_all(&[p("127.0.0.1::80"), p("127.0.0.1::53/udp")]).unwrap();
        assert!(free.iter().all(|(p, _)| p.host_port != 0));
    }

    #[test]
    fn expose_entries_become_random_ports() {
        let e = exposed(&["80/tcp".into(), "53/udp".into()]).unwrap();
        assert_eq!(e[1].proto, Proto::Udp);
        assert!(e.iter().all(|p| p.host_port.is_none()));
    }
}
