//! The container's /etc/hosts and /etc/resolv.conf: its own name, the gateway names that
//! reach the host (`host.containers.internal`, `host.docker.internal`), the other containers
//! on its network (rewritten in place as they come and go: the file is bind-mounted), and the
//! resolver the user-mode network forwards to the host's.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

/// The names that reach the host's loopback through the gateway.
pub const GATEWAY_NAMES: &[&str] = &["host.containers.internal", "host.docker.internal"];

const LOCALHOST: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

/// What a connected container's /etc files say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcView {
    /// The container's address and its names (hostname, container name, aliases).
    pub own: Option<(IpAddr, Vec<String>)>,
    /// The gateway to the host.
    pub gateway: Option<IpAddr>,
    /// Other containers on the network: address and names.
    pub peers: Vec<(IpAddr, Vec<String>)>,
    /// The resolver the container asks.
    pub nameserver: Option<IpAddr>,
}

/// /etc/hosts for `view`.
pub fn render_hosts(view: &EtcView) -> String {
    let mut out = String::from(LOCALHOST);
    if let Some((ip, names)) = &view.own {
        out.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    if let Some(gw) = view.gateway {
        out.push_str(&format!("{gw}\t{}\n", GATEWAY_NAMES.join(" ")));
    }
    for (ip, names) in &view.peers {
        out.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    out
}

/// /etc/resolv.conf: the forwarder, with the host's search domains and options.
pub fn render_resolv(nameserver: IpAddr, host_resolv: &str) -> String {
    let mut out = format!("nameserver {nameserver}\n");
    for l in host_resolv.lines() {
        let l = l.trim();
        if l.starts_with("search ") || l.starts_with("domain ") || l.starts_with("options ") {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Writes hostname, hosts and resolv.conf for a connected container into `dir`.
pub fn write(dir: &Path, hostname: &str, view: &EtcView) -> std::io::Result<()> {
    std::fs::write(dir.join("hostname"), format!("{hostname}\n"))?;
    std::fs::write(dir.join("hosts"), render_hosts(view))?;
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv = match view.nameserver {
        Some(ns) => render_resolv(ns, &host_resolv),
        None => host_resolv,
    };
    std::fs::write(dir.join("resolv.conf"), resolv)
}

/// Rewrites a bind-mounted file in place (same inode), so the container sees the change.
pub fn rewrite_in_place(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_the_gateway_and_peers() {
        let view = EtcView {
            own: Some(("10.0.2.100".parse().unwrap(), vec!["abc".into()])),
            gateway: Some("10.0.2.2".parse().unwrap()),
            peers: vec![("10.89.0.3".parse().unwrap(), vec!["db".into(), "pg".into()])],
            nameserver: None,
        };
        let h = render_hosts(&view);
        assert!(h.contains("10.0.2.100\tabc\n"), "{h}");
        assert!(
            h.contains("10.0.2.2\thost.containers.internal host.docker.internal\n"),
            "{h}"
        );
        assert!(h.contains("10.89.0.3\tdb pg\n"), "{h}");
    }

    #[test]
    fn resolv_keeps_search_domains() {
        let r = render_resolv(
            "10.0.2.3".parse().unwrap(),
            "nameserver 127.0.0.53\nsearch example.org\noptions edns0\n",
        );
        assert_eq!(
            r,
            "nameserver 10.0.2.3\nsearch example.org\noptions edns0\n"
        );
    }
}
