//! slirp4netns: a user-mode TCP/IP stack behind a tap device in a network namespace. berth
//! starts it from the host's namespaces (its sockets to the outside live there), pointed at the
//! container's user and network namespaces, waits on its ready fd, and asks its API socket for
//! host forwards. It gets a parent-death signal and is killed when dropped.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Backend, NetError, Proto, PublishedPort};

/// The addresses `slirp4netns --configure` gives the namespace.
pub const CONTAINER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
/// The gateway; connections to it reach the host's loopback.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The prefix length of the network `slirp4netns --configure` gives the namespace (10.0.2.0/24).
pub const PREFIX_LEN: u8 = 24;
/// The DNS forwarder (to the host's resolvers).
pub const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);

/// How long slirp4netns may take to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running slirp4netns.
#[derive(Debug)]
pub struct Slirp4netns {
    child: Child,
    api: Option<PathBuf>,
    /// Whether it forwards host ports (asked through the API socket).
    forwards: bool,
}

fn tool_err(message: String) -> NetError {
    NetError::Tool {
        tool: "slirp4netns",
        message,
    }
}

/// Kills `child` with the parent (berth): set in the child before exec.
pub(crate) fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure only calls prctl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        });
    }
}

/// What a failed helper wrote to its log, for the error message.
pub(crate) fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("Failed to send"))
        .collect();
    lines[lines.len().saturating_sub(4)..].join("; ")
}

impl Slirp4netns {
    /// Starts slirp4netns for the network namespace `netns` (entered through `userns`), with
    /// its log in `log` and, when asked, an API socket at `api`.
    pub fn start(
        userns: Option<&Path>,
        netns: &Path,
        api: Option<&Path>,
        log: &Path,
    ) -> Result<Slirp4netns, NetError> {
        let program = Backend::Slirp4netns.program()?;
        let (ready_rd, ready_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| tool_err(format!("pipe: {e}")))?;
        let logf = std::fs::File::create(log).map_err(super::io("creating", log))?;
        let mut cmd = Command::new(program);
        cmd.args([
            "--configure",
            "--mtu=65520",
            "--enable-seccomp",
            "--ready-fd=3",
        ]);
        cmd.arg(format!("--macaddress={}", super::mac_for(CONTAINER_IP)));
        if let Some(api) = api {
            let _ = std::fs::remove_file(api);
            cmd.arg(format!("--api-socket={}", api.display()));
        }
        if let Some(u) = userns {
            cmd.arg(format!("--userns-path={}", u.display()));
        }
        cmd.arg("--netns-type=path").arg(netns).arg("tap0");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(logf));
        let ready_fd = ready_wr.as_raw_fd();
        die_with_parent(&mut cmd);
        // SAFETY: dup2 is async-signal-safe; fd 3 becomes the ready pipe (without CLOEXEC).
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(ready_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| tool_err(format!("cannot start: {e}")))?;
        drop(ready_wr);
        let mut s = Slirp4netns {
            child,
            api: api.map(Path::to_path_buf),
            forwards: false,
        };
        s.wait_ready(ready_rd, log)?;
        Ok(s)
    }

    fn wait_ready(&mut self, ready: OwnedFd, log: &Path) -> Result<(), NetError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pfd = libc::pollfd {
            fd: ready.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(tool_err(format!(
                    "not ready within {READY_TIMEOUT:?} (log: {})",
                    log_tail(log)
                )));
            }
            // SAFETY: poll on one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
            if n > 0 {
                break;
            }
        }
        let mut byte = [0u8; 1];
        let mut f = std::fs::File::from(ready);
        match f.read(&mut byte) {
            Ok(1) if byte[0] == b'1' => Ok(()),
            _ => {
                let status = self.child.wait().ok();
                Err(tool_err(format!(
                    "exited before it was ready ({}): {}",
                    status.map_or("?".into(), |s| s.to_string()),
                    log_tail(log)
                )))
            }
        }
    }

    /// Asks slirp4netns to forward a host port into the namespace (its `add_hostfwd`).
    pub fn add_hostfwd(&mut self, port: &PublishedPort) -> Result<(), NetError> {
        self.forwards = true;
        let Some(api) = &self.api else {
            return Err(tool_err("started without an API socket".into()));
        };
        let host_addr = match port.host_ip {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(_) => return Err(NetError::BadPort {
                spec: port.to_string(),
                why: "slirp4netns forwards IPv4 host addresses only; use the default port handler"
                    .into(),
            }),
        };
        let req = serde_json::json!({
            "execute": "add_hostfwd",
            "arguments": {
                "proto": match port.proto { Proto::Tcp => "tcp", Proto::Udp => "udp" },
                "host_addr": host_addr,
                "host_port": port.host_port,
                "guest_port": port.container_port,
            }
        });
        let mut sock =
            UnixStream::connect(api).map_err(|e| tool_err(format!("API socket: {e}")))?;
        sock.write_all(req.to_string().as_bytes())
            .map_err(|e| tool_err(format!("API socket: {e}")))?;
        let _ = sock.shutdown(std::net::Shutdown::Write);
        let mut reply = String::new();
        let _ = sock.read_to_string(&mut reply);
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap_or_default();
        if v.get("return").is_some() {
            return Ok(());
        }
        let desc = v
            .pointer("/error/desc")
            .and_then(|d| d.as_str())
            .unwrap_or(reply.trim());
        Err(tool_err(format!("forwarding {port}: {desc}")))
    }
}

/// Kills a helper. One that holds published host ports is waited for, so that the ports are
/// free when `berth run` returns; one that holds none is not: closing its tap device makes the
/// kernel tear the interface down, 10-25 ms of RCU grace periods that `berth run` need not
/// wait for (the zombie is reaped when berth exits, right after the container).
pub(crate) fn kill_helper(child: &mut Child, holds_ports: bool) {
    let _ = child.kill();
    if holds_ports {
        let _ = child.wait();
    } else {
        let _ = child.try_wait();
    }
}

impl Slirp4netns {
    /// Leaves it running (for a process that outlives this value, see
    /// [`super::Helpers`]): its pid, and the API socket to remove once it is stopped.
    pub(crate) fn keep_running(self) -> (i32, Option<PathBuf>) {
        let me = std::mem::ManuallyDrop::new(self);
        (me.child.id() as i32, me.api.clone())
    }
}

impl Drop for Slirp4netns {
    fn drop(&mut self) {
        kill_helper(&mut self.child, self.forwards);
        if let Some(api) = &self.api {
            let _ = std::fs::remove_file(api);
        }
    }
}
