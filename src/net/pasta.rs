//! pasta (from passt): a user-mode network for a namespace that copies the host's addresses
//! and routes, and forwards published ports itself (connections from the host's loopback are
//! spliced straight into the namespace's loopback). berth runs it in the foreground as its
//! child, pointed at the container's namespaces, with every automatic forward off and the
//! published ports given as `-t`/`-u` options; it is ready when it writes its pid file.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::slirp4netns::{die_with_parent, kill_helper, log_tail};
use super::{Backend, NetError, Proto, PublishedPort};

/// Where the container sends DNS queries; pasta forwards them to the host's first resolver.
pub const DNS: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running pasta.
#[derive(Debug)]
pub struct Pasta {
    child: Child,
    /// Whether it forwards host ports.
    forwards: bool,
}

fn tool_err(message: String) -> NetError {
    NetError::Tool {
        tool: "pasta",
        message,
    }
}

/// The host's IPv4 default gateway: pasta gives the namespace the same one, and maps
/// connections to it onto the host's loopback.
pub fn host_gateway() -> Option<Ipv4Addr> {
    default_route().map(|(_, gw)| gw)
}

/// The interface and gateway of the host's IPv4 default route, from /proc/net/route.
fn default_route() -> Option<(String, Ipv4Addr)> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 3 || f[1] != "00000000" {
            return None;
        }
        let gw = u32::from_str_radix(f[2], 16).ok()?;
        Some((f[0].to_string(), Ipv4Addr::from(u32::from_be(gw))))
    })
}

/// The host's IPv4 address on the default route's interface: pasta gives it to the namespace.
pub fn host_address() -> Option<Ipv4Addr> {
    host_network().map(|(ip, _)| ip)
}

/// The host's IPv4 address on the default route's interface and its prefix length: pasta
/// copies both into the namespace.
pub fn host_network() -> Option<(Ipv4Addr, u8)> {
    let (ifname, _) = default_route()?;
    nix::ifaddrs::getifaddrs().ok()?.find_map(|a| {
        if a.interface_name != ifname {
            return None;
        }
        let sin = a.address?.as_sockaddr_in().copied()?;
        let prefix = a
            .netmask
            .and_then(|m| {
                m.as_sockaddr_in()
                    .map(|m| u32::from(m.ip()).count_ones() as u8)
            })
            .unwrap_or(32);
        Some((sin.ip(), prefix))
    })
}

/// pasta's `-t`/`-u` argument for one port: `[ADDR/]HOST:CTR`.
fn port_arg(p: &PublishedPort) -> String {
    format!("{}/{}:{}", p.host_ip, p.host_port, p.container_port)
}

impl Pasta {
    /// Starts pasta for the user and network namespaces of `pid`, forwarding `ports`.
    /// Starts pasta for the namespace of `pid`, whose interface gets the address `mac`.
    pub fn start(
        pid: i32,
        ports: &[PublishedPort],
        run_dir: &Path,
        mac: &str,
    ) -> Result<Pasta, NetError> {
        let program = Backend::Pasta.program()?;
        if host_gateway().is_none() {
            return Err(tool_err(
                "the host has no IPv4 default route for pasta to copy; use --network slirp4netns"
                    .into(),
            ));
        }
        let pid_file = run_dir.join("pasta.pid");
        let log = run_dir.join("pasta.log");
        let _ = std::fs::remove_file(&pid_file);
        let logf = std::fs::File::create(&log).map_err(super::io("creating", &log))?;
        let mut cmd = Command::new(program);
        cmd.args(["--config-net", "--foreground", "--quiet"])
            .arg("--pid")
            .arg(&pid_file)
            .args(["--dns-forward", &DNS.to_string()])
            .args(["--ns-mac-addr", mac]);
        for (flag, proto) in [("-t", Proto::Tcp), ("-u", Proto::Udp)] {
            let mine: Vec<String> = ports
                .iter()
                .filter(|p| p.proto == proto)
                .map(port_arg)
                .collect();
            if mine.is_empty() {
                cmd.args([flag, "none"]);
            }
            for m in mine {
                cmd.args([flag, &m]);
            }
        }
        // Nothing from the namespace's loopback to the host's: the gateway name is the way.
        cmd.args(["-T", "none", "-U", "none"]);
        cmd.arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(logf));
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| tool_err(format!("cannot start: {e}")))?;
        let mut p = Pasta {
            child,
            forwards: !ports.is_empty(),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if std::fs::metadata(&pid_file).is_ok_and(|m| m.len() > 0) {
                return Ok(p);
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(tool_err(format!(
                    "exited before it was ready ({status}): {}",
                    log_tail(&log)
                )));
            }
            if Instant::now() > deadline {
                return Err(tool_err(format!(
                    "not ready within {READY_TIMEOUT:?}: {}",
                    log_tail(&log)
                )));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}

impl Pasta {
    /// Leaves it running (see [`super::Helpers`]) and returns its pid.
    pub(crate) fn keep_running(self) -> i32 {
        std::mem::ManuallyDrop::new(self).child.id() as i32
    }
}

impl Drop for Pasta {
    fn drop(&mut self) {
        kill_helper(&mut self.child, self.forwards);
    }
}

/// The address the container has with pasta (the host's own), for its /etc/hosts.
pub fn container_ip() -> IpAddr {
    host_address().map_or(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1)), IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_args_name_the_address() {
        let p = PublishedPort {
            host_ip: "127.0.0.1".parse().unwrap(),
            host_port: 8080,
            container_port: 80,
            proto: Proto::Tcp,
        };
        assert_eq!(port_arg(&p), "127.0.0.1/8080:80");
    }
}
