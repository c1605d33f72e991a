//! A microVM's user-mode network: passt (the VM flavour of pasta, from the `passt` package)
//! on one end of a socket pair, the VM's virtio-net device on the other. passt gives the guest
//! a fixed address behind a gateway that reaches the host's loopback, forwards DNS queries
//! sent to [`DNS`] to the host's resolvers, and forwards published host ports into the guest.
//! It runs as the user, exits when the socket closes, and is killed with berth.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// The guest's address, its network and the gateway (the host), as slirp4netns numbers them.
pub const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
pub const PREFIX_LEN: u8 = 24;
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// Where the guest sends DNS queries; passt forwards them to the host's resolvers.
pub const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// The descriptor passt finds its end of the socket pair on.
const PASST_FD: i32 = 3;
/// The send buffer asked for passt's end of the socket pair; the kernel caps it at
/// net.core.wmem_max (and doubles what it grants).
const PASST_SNDBUF: usize = 4 << 20;
/// The largest TCP window the guest advertises through passt. passt sends a connection's
/// whole window to the guest at once and loses what its socket does not take, and the socket
/// counts each frame's memory, not its bytes (about 2.3 KiB for a 1514-byte frame, a little
/// more than its size for a large one): with net.core.wmem_max at its usual 208 KiB (doubled)
/// the socket holds some 180 small frames. 96 KiB is about 70 of those, or one and a half frames
/// of the guest's 65520-byte MTU, so one bulk transfer and the ACKs of another never overflow it,
/// whenever the device reads. At 50 µs round trip that still allows some 15 Gb/s.
pub const GUEST_TCP_WINDOW: u32 = 96 << 10;

/// A port the host forwards into the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The host address to listen on; `None` for every address.
    pub host_ip: Option<std::net::IpAddr>,
    pub host_port: u16,
    pub guest_port: u16,
    pub udp: bool,
}

impl Forward {
    /// passt's spec for it: `[ADDR/]PORT:GUESTPORT`.
    fn spec(&self) -> String {
        let addr = self.host_ip.map(|ip| format!("{ip}/")).unwrap_or_default();
        format!("{addr}{}:{}", self.host_port, self.guest_port)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PasstError {
    #[error("passt not found: the microVM's user-mode network needs it (apt-get install passt), or run with --network none")]
    NotFound,
    #[error("this host has no IPv4 default route, and passt (the microVM's user-mode network) needs one to work; run with --network none, or connect the host")]
    NoDefaultRoute,
    #[error("starting passt: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("creating the network socket pair: {0}")]
    Socket(#[source] std::io::Error),
}

/// A running passt; killed and reaped when dropped.
pub struct Passt {
    child: Child,
}

impl Drop for Passt {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts passt for a VM with `forwards`, its messages going to `log`; returns it and the VM's
/// end of the frame stream.
pub fn start(forwards: &[Forward], log: std::fs::File) -> Result<(Passt, UnixStream), PasstError> {
    // passt gives up at once without an external interface; say why before a guest waits on a
    // network that is not there.
    if !has_default_route(&std::fs::read_to_string("/proc/net/route").unwrap_or_default()) {
        return Err(PasstError::NoDefaultRoute);
    }
    let (vmm_end, passt_end) = UnixStream::pair().map_err(PasstError::Socket)?;
    widen_send_buffer(&passt_end);
    let passt_end = OwnedFd::from(passt_end);
    let mut cmd = Command::new("passt");
    cmd.args(["--foreground", "--quiet", "--one-off"])
        .args(["--fd", &PASST_FD.to_string()])
        .args(["--address", &GUEST.to_string()])
        .args(["--netmask", &PREFIX_LEN.to_string()])
        .args(["--gateway", &GATEWAY.to_string()])
        .args(["--dns-forward", &DNS.to_string()])
        // IPv4 only: the guest is configured for IPv4 alone.
        .arg("--ipv4-only");
    let (tcp, udp): (Vec<&Forward>, Vec<&Forward>) = forwards.iter().partition(|f| !f.udp);
    for (flag, list) in [("--tcp-ports", tcp), ("--udp-ports", udp)] {
        if list.is_empty() {
            cmd.args([flag, "none"]);
        }
        for f in list {
            cmd.args([flag, &f.spec()]);
        }
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
    let raw = passt_end.as_raw_fd();
    // SAFETY: between fork and exec only async-signal-safe calls: dup2 (or fcntl) to put the
    // socket on the descriptor passt expects without close-on-exec, and prctl for the
    // parent-death signal.
    unsafe {
        cmd.pre_exec(move || {
            if raw == PASST_FD {
                // dup2 onto itself would keep close-on-exec: clear it instead.
                if libc::fcntl(raw, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(raw, PASST_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => PasstError::NotFound,
        _ => PasstError::Spawn(e),
    })?;
    drop(passt_end);
    Ok((Passt { child }, vmm_end))
}

/// Raises the send buffer of passt's end of the socket pair as far as the kernel lets a user
/// (net.core.wmem_max, doubled). passt writes frames to the guest without waiting
/// (MSG_DONTWAIT) and the frames its socket does not take are lost; the passt of Debian 12
/// (2023-03) does not even tell its TCP, which notices only from the guest's duplicate ACKs
/// and then sends the whole window again, overflowing the socket again. A UNIX stream counts
/// what waits in it against the sender's buffer: this one is what passt may write ahead of
/// the device's reading (see also [`GUEST_TCP_WINDOW`]).
fn widen_send_buffer(passt_end: &UnixStream) {
    use nix::sys::socket::{setsockopt, sockopt::SndBuf};
    // Best effort: the default buffer still works, only with less room.
    let _ = setsockopt(passt_end, SndBuf, &PASST_SNDBUF);
}

/// Whether `/proc/net/route` (its text) has an IPv4 default route.
fn has_default_route(routes: &str) -> bool {
    routes
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some("00000000"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_become_passt_specs() {
        let f = Forward {
            host_ip: Some("127.0.0.1".parse().unwrap()),
            host_port: 8080,
            guest_port: 80,
            udp: false,
        };
        assert_eq!(f.spec(), "127.0.0.1/8080:80");
        let any = Forward { host_ip: None, ..f };
        assert_eq!(any.spec(), "8080:80");
    }

    #[test]
    fn default_routes_are_found_in_proc_net_route() {
        let head = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n";
        let with = format!("{head}eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\n");
        let without = format!("{head}eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n");
        assert!(has_default_route(&with));
        assert!(!has_default_route(&without));
        assert!(!has_default_route(""));
    }

    #[test]
    fn passts_end_of_the_socket_pair_gets_a_larger_send_buffer() {
        use nix::sys::socket::{getsockopt, sockopt::SndBuf};
        let (_vmm_end, passt_end) = UnixStream::pair().unwrap();
        let before = getsockopt(&passt_end, SndBuf).unwrap();
        widen_send_buffer(&passt_end);
        // Whatever net.core.wmem_max is, the kernel grants twice what it lets a user ask.
        assert!(getsockopt(&passt_end, SndBuf).unwrap() > before);
    }
}
