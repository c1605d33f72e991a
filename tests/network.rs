//! Container networking through the real binary, real namespaces and the real slirp4netns and
//! pasta: published TCP and UDP ports reached from the host, the host's loopback reached from
//! the container through the gateway name, DNS through the user-mode forwarder, user-defined
//! networks (names, aliases, isolation), and the errors a user meets. Only loopback and
//! namespaces the tests create carry traffic; nothing leaves the machine.

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{
    assert_exit, describe, free_port, have, lines, skip, stderr, stdout, tcp_ask, Berth, IMAGE,
};

const BACKENDS: &[&str] = &["slirp4netns", "pasta"];

/// The fixture, or None when `tool` is missing (the test skips).
fn berth_with(tool: &str) -> Option<Berth> {
    if !have(tool) {
        skip(&format!(
            "{tool} is not installed (scripts/setup-host installs it)"
        ));
        return None;
    }
    Berth::new()
}

fn interfaces(proc_net_dev: &str) -> Vec<String> {
    let mut names: Vec<String> = proc_net_dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

/// Sends `msg` over UDP to `addr` until an answer comes back.
fn udp_ask(addr: SocketAddr, msg: &str, within: Duration) -> String {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        let _ = sock.send_to(msg.as_bytes(), addr);
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            return String::from_utf8_lossy(&buf[..n]).into_owned();
        }
    }
    panic!("no UDP answer from {addr} within {within:?}");
}

/// A static UDP echo server (busybox has none), built once per test process with the host's
/// C compiler; containers get it through a read-only bind mount.
fn udp_echo_tool() -> Option<PathBuf> {
    static TOOL: OnceLock<Option<PathBuf>> = OnceLock::new();
    TOOL.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("berth-net-tools");
        std::fs::create_dir_all(&dir).ok()?;
        let src = dir.join("udp-echo.c");
        let bin = dir.join("udp-echo");
        std::fs::write(
            &src,
            r#"#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
/* udp-echo PORT: answers every datagram with "echo:" and the datagram. */
int main(int argc, char **argv) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[1]));
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0) { perror("bind"); return 1; }
    printf("listening\n");
    fflush(stdout);
    for (;;) {
        char buf[2048 + 5] = "echo:";
        struct sockaddr_in from;
        socklen_t len = sizeof from;
        ssize_t n = recvfrom(s, buf + 5, 2048, 0, (struct sockaddr *)&from, &len);
        if (n >= 0) sendto(s, buf, n + 5, 0, (struct sockaddr *)&from, len);
    }
}
"#,
        )
        .ok()?;
        let ok = Command::new("cc")
            .args(["-static", "-O2", "-o"])
            .arg(&bin)
            .arg(&src)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| {
            for d in [&dir, &bin] {
                let _ = std::fs::set_permissions(
                    d,
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                );
            }
            dir
        })
    })
    .clone()
}

// --- the simple modes -------------------------------------------------------------------------

#[test]
fn network_none_has_only_loopback() {
    let Some(berth) = Berth::new() else { return };
    let out = berth.container_ok(&["--network", "none", IMAGE, "cat", "/proc/net/dev"]);
    assert_eq!(interfaces(&out), ["lo"], "{out}");
}

#[test]
fn network_host_shares_the_hosts_interfaces() {
    let Some(berth) = Berth::new() else { return };
    let out = berth.container_ok(&["--network", "host", IMAGE, "cat", "/proc/net/dev"]);
    let host = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    assert_eq!(
        interfaces(&out),
        interfaces(&host),
        "container:\n{out}\nhost:\n{host}"
    );
}

#[test]
fn the_default_network_is_user_mode_and_berth_info_names_it() {
    let Some(berth) = berth_with("slirp4netns") else {
        return;
    };
    let info = berth.run_ok(&["info"]);
    assert!(
        info.contains("Network: slirp4netns (default)"),
        "berth info does not name the default backend:\n{info}"
    );
    let out = berth.container_ok(&[IMAGE, "sh", "-c", "cat /proc/net/dev; ip route"]);
    assert!(
        interfaces(&out).contains(&"tap0".to_string()),
        "no tap0 in the default network: {out}"
    );
    assert!(
        out.contains("default via 10.0.2.2"),
        "no default route: {out}"
    );
}

// --- published ports --------------------------------------------------------------------------

/// A TCP echo server in the container on port 8080, reached from the host through an explicit
/// and through a random published port.
fn tcp_echo_through_published_ports(network: &str) {
    let Some(berth) = berth_with(network.split(':').next().unwrap_or(network)) else {
        return;
    };
    let fixed = free_port();
    let fixed_arg = format!("127.0.0.1:{fixed}:8080");
    let mut server = berth.spawn(&[
        "run",
        "--rm",
        "--init",
        "--name",
        "echo",
        "--network",
        network,
        "-p",
        &fixed_arg,
        "-p",
        "127.0.0.1::8080",
        IMAGE,
        "sh",
        "-c",
        "echo up; exec nc -ll -p 8080 -e cat",
    ]);
    server.wait_for_line("up", Duration::from_secs(30));
    let reply = tcp_ask(
        SocketAddr::from((Ipv4Addr::LOCALHOST, fixed)),
        "hello over tcp\n",
        Duration::from_secs(20),
    );
    assert_eq!(reply, "hello over tcp\n");

    let port_out = berth.run_ok(&["port", "echo"]);
    let random: SocketAddr = lines(&port_out)
        .iter()
        .filter(|l| l.starts_with("8080/tcp -> "))
        .map(|l| l["8080/tcp -> ".len()..].parse().expect("an address"))
        .find(|a: &SocketAddr| a.port() != fixed)
        .unwrap_or_else(|| panic!("berth port shows no random port:\n{port_out}"));
    assert_eq!(
        berth.run_ok(&["port", "echo", "8080/tcp"]).lines().count(),
        2
    );
    let ps = berth.run_ok(&["ps"]);
    assert!(
        ps.contains(&format!("127.0.0.1:{}->8080/tcp", random.port())),
        "berth ps does not show the random port:\n{ps}"
    );
    let reply = tcp_ask(random, "and again\n", Duration::from_secs(10));
    assert_eq!(reply, "and again\n");
    server.signal(nix::sys::signal::Signal::SIGTERM);
    let out = server.wait(Duration::from_secs(20));
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", fixed)).is_ok(),
        "the host port is still taken after the container ended: {}",
        describe(&["run"], &out)
    );
}

#[test]
fn tcp_echo_on_a_published_port_slirp4netns() {
    tcp_echo_through_published_ports("slirp4netns");
}

#[test]
fn tcp_echo_on_a_published_port_slirp4netns_api() {
    tcp_echo_through_published_ports("slirp4netns:port_handler=slirp4netns");
}

#[test]
fn tcp_echo_on_a_published_port_pasta() {
    tcp_echo_through_published_ports("pasta");
}

fn udp_echo_through_a_published_port(network: &str) {
    let Some(berth) = berth_with(network.split(':').next().unwrap_or(network)) else {
        return;
    };
    let Some(tools) = udp_echo_tool() else {
        skip("cannot build the static UDP echo server: install gcc and libc6-dev");
        return;
    };
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:5353/udp");
    let volume = format!("{}:/tools:ro", tools.display());
    let mut server = berth.spawn(&[
        "run",
        "--rm",
        "--init",
        "--network",
        network,
        "-p",
        &publish,
        "-v",
        &volume,
        IMAGE,
        "/tools/udp-echo",
        "5353",
    ]);
    server.wait_for_line("listening", Duration::from_secs(30));
    let reply = udp_ask(
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        "ping",
        Duration::from_secs(20),
    );
    assert_eq!(reply, "echo:ping");
    server.signal(nix::sys::signal::Signal::SIGTERM);
    server.wait(Duration::from_secs(20));
}

#[test]
fn udp_echo_on_a_published_port() {
    for b in BACKENDS {
        udp_echo_through_a_published_port(b);
    }
    udp_echo_through_a_published_port("slirp4netns:port_handler=slirp4netns");
}

#[test]
fn publish_all_publishes_the_images_exposed_ports() {
    let Some(berth) = berth_with("slirp4netns") else {
        return;
    };
    berth.load_config_image();
    let mut server = berth.spawn(&[
        "run",
        "--rm",
        "--init",
        "--name",
        "exposed",
        "-P",
        "--entrypoint",
        "sh",
        common::CONFIG_IMAGE,
        "-c",
        "echo up; exec nc -ll -p 8080 -e cat",
    ]);
    server.wait_for_line("up", Duration::from_secs(30));
    let ports = berth.run_ok(&["port", "exposed"]);
    let find = |key: &str| -> SocketAddr {
        lines(&ports)
            .iter()
            .find_map(|l| l.strip_prefix(key).map(|a| a.parse().expect("an address")))
            .unwrap_or_else(|| panic!("no {key} in berth port:\n{ports}"))
    };
    let tcp = find("8080/tcp -> ");
    let udp = find("5353/udp -> ");
    assert!(tcp.ip().is_unspecified() && tcp.port() != 0, "{ports}");
    assert!(udp.ip().is_unspecified() && udp.port() != 0, "{ports}");
    let reply = tcp_ask(
        SocketAddr::from((Ipv4Addr::LOCALHOST, tcp.port())),
        "exposed\n",
        Duration::from_secs(20),
    );
    assert_eq!(reply, "exposed\n");
    server.signal(nix::sys::signal::Signal::SIGTERM);
    server.wait(Duration::from_secs(20));
}

#[test]
fn a_host_port_in_use_fails_before_the_container_starts() {
    let Some(berth) = Berth::new() else { return };
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let marker = berth.host_mkdir("marker");
    let volume = format!("{}:/marker", marker.display());
    let publish = format!("127.0.0.1:{port}:80");
    let args = [
        "run",
        "--rm",
        "-p",
        &publish,
        "-v",
        &volume,
        IMAGE,
        "touch",
        "/marker/ran",
    ];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 125);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("already in use"),
        "{err}"
    );
    assert!(!marker.join("ran").exists(), "the container ran anyway");
}

#[test]
fn publishing_needs_a_network_of_the_containers_own() {
    let Some(berth) = Berth::new() else { return };
    let args = [
        "run",
        "--rm",
        "--network",
        "none",
        "-p",
        "8080:80",
        IMAGE,
        "true",
    ];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 125);
    assert!(stderr(&out).contains("--network none"), "{}", stderr(&out));
    let args = ["run", "--rm", "-p", "80/sctp", IMAGE, "true"];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 125);
    assert!(stderr(&out).contains("tcp or udp"), "{}", stderr(&out));
}

#[test]
fn a_missing_backend_says_how_to_install_it() {
    // A PATH with the id-map helpers (and setpriv, which runs berth) and nothing else.
    let path_dir = tempfile::Builder::new()
        .prefix("berth-path-")
        .tempdir_in("/tmp")
        .unwrap();
    let bin = path_dir.path();
    std::fs::set_permissions(bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for helper in ["newuidmap", "newgidmap", "setpriv"] {
        std::os::unix::fs::symlink(format!("/usr/bin/{helper}"), bin.join(helper)).unwrap();
    }
    let Some(berth) = Berth::options().env("PATH", &bin.to_string_lossy()).start() else {
        return;
    };
    for (network, tool, package) in [
        ("slirp4netns", "slirp4netns", "slirp4netns"),
        ("pasta", "pasta", "passt"),
    ] {
        let args = ["run", "--rm", "--network", network, IMAGE, "true"];
        let out = berth.cmd(&args);
        assert_exit(&args, &out, 125);
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "{tool} not found: install it with `apt-get install {package}`"
            )),
            "{err}"
        );
    }
    let args = ["run", "--rm", IMAGE, "true"];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 125);
    assert!(
        stderr(&out).contains("apt-get install slirp4netns"),
        "{}",
        stderr(&out)
    );
}

// --- the host from the container ---------------------------------------------------------------

/// A server on the host's 127.0.0.1 answers the container through `host.containers.internal`.
fn host_loopback_through_the_gateway(network: &str) {
    let Some(berth) = berth_with(network) else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let mut served = 0;
        while served < 2 {
            let Ok((mut s, _)) = listener.accept() else {
                break;
            };
            let _ = s.write_all(b"hello from the host\n");
            served += 1;
        }
    });
    // The first line of the answer is what counts: Debian 12's pasta (2023) may pass the
    // host's FIN on late or never, and may even repeat data on its tap path. `--init`:
    // busybox's timeout signals its command, which as PID 1 would ignore SIGTERM.
    let script = format!(
        "for name in host.containers.internal host.docker.internal; do (timeout 10 nc $name {port} </dev/null; true) | head -n 1; done"
    );
    let out = berth.container_ok(&["--init", "--network", network, IMAGE, "sh", "-c", &script]);
    assert_eq!(
        out, "hello from the host\nhello from the host\n",
        "{network}"
    );
    server.join().unwrap();
}

#[test]
fn host_loopback_through_the_gateway_name_slirp4netns() {
    host_loopback_through_the_gateway("slirp4netns");
}

#[test]
fn host_loopback_through_the_gateway_name_pasta() {
    host_loopback_through_the_gateway("pasta");
}

#[test]
fn resolv_conf_names_the_user_mode_dns_forwarder() {
    for (network, ns) in [("slirp4netns", "10.0.2.3"), ("pasta", "169.254.1.1")] {
        let Some(berth) = berth_with(network) else {
            return;
        };
        let out = berth.container_ok(&["--network", network, IMAGE, "cat", "/etc/resolv.conf"]);
        assert_eq!(
            lines(&out).first().map(String::as_str),
            Some(format!("nameserver {ns}").as_str()),
            "{network}: {out}"
        );
    }
}

/// A DNS server on the host's 127.0.0.1:53 that answers every A query with 192.0.2.123 (and
/// AAAA with no record), until `stop` is set.
fn fake_dns(
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Option<std::thread::JoinHandle<usize>> {
    let sock = UdpSocket::bind("127.0.0.1:53").ok()?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .ok()?;
    Some(std::thread::spawn(move || {
        let mut answered = 0;
        let mut buf = [0u8; 512];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            if n < 17 {
                continue;
            }
            // Header, then the question: name labels, a zero, type and class.
            let mut end = 12;
            while end < n && buf[end] != 0 {
                end += buf[end] as usize + 1;
            }
            let qend = end + 5;
            if qend > n {
                continue;
            }
            let qtype = u16::from_be_bytes([buf[end + 1], buf[end + 2]]);
            let a = qtype == 1;
            let mut reply = buf[..qend].to_vec();
            reply[2] = 0x81;
            reply[3] = 0x80;
            reply[6..8].copy_from_slice(&[0, a as u8]);
            reply[8..12].copy_from_slice(&[0, 0, 0, 0]);
            if a {
                reply.extend_from_slice(&[
                    0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 123,
                ]);
                answered += 1;
            }
            let _ = sock.send_to(&reply, from);
        }
        answered
    }))
}

/// Names resolve through the user-mode DNS forwarder to the host's resolver: here a fake one
/// on the host's loopback, which berth (and its slirp4netns or pasta) sees as the only entry
/// of /etc/resolv.conf through a mount namespace the test makes.
#[test]
fn names_resolve_through_the_user_mode_dns_forwarder() {
    if !nix::unistd::Uid::effective().is_root() {
        skip("this test binds a fake DNS server to port 53 and needs the suite to run as root");
        return;
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let Some(server) = fake_dns(stop.clone()) else {
        skip("port 53 on 127.0.0.1 is taken: a DNS server runs on this host");
        return;
    };
    let resolv = tempfile::Builder::new()
        .prefix("berth-resolv-")
        .tempfile_in("/tmp")
        .unwrap();
    std::fs::write(resolv.path(), "nameserver 127.0.0.1\n").unwrap();
    std::fs::set_permissions(
        resolv.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    for network in ["slirp4netns", "pasta"] {
        let Some(berth) = berth_with(network) else {
            continue;
        };
        let args = [
            "run",
            "--rm",
            "--network",
            network,
            IMAGE,
            "nslookup",
            "db.berth.test",
        ];
        let inner = berth.command(&args);
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"",
        ])
        .arg(resolv.path())
        .arg(inner.get_program())
        .args(inner.get_args())
        .env_clear()
        .current_dir("/");
        for (k, v) in inner.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        let out = cmd.output().expect("running unshare");
        assert!(
            stdout(&out).contains("192.0.2.123"),
            "{network}: the name did not resolve through the forwarder:\n{}",
            describe(&args, &out)
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(server.join().unwrap() > 0);
}

// --- user-defined networks ------------------------------------------------------------------------

fn bridge_berth() -> Option<Berth> {
    for tool in ["slirp4netns", "iptables", "ip"] {
        if !have(tool) {
            skip(&format!(
                "{tool} is not installed (scripts/setup-host installs it)"
            ));
            return None;
        }
    }
    Berth::new()
}

/// A client script that retries until the server answers (it may still be starting).
fn ask(host: &str, port: u16) -> String {
    format!(
        "(for i in $(seq 100); do r=$(nc -w 2 {host} {port} </dev/null 2>/dev/null) && [ -n \"$r\" ] && echo \"$r\" && exit 0; sleep 0.1; done; echo no answer from {host}; exit 1)"
    )
}

#[test]
fn containers_on_one_network_reach_each_other_by_name_and_alias() {
    let Some(berth) = bridge_berth() else { return };
    berth.run_ok(&["network", "create", "app"]);
    let mut server = berth.spawn(&[
        "run",
        "--rm",
        "--init",
        "--name",
        "web",
        "--network",
        "app",
        "--network-alias",
        "frontend",
        IMAGE,
        "sh",
        "-c",
        "echo up; exec nc -ll -p 7000 -e echo pong",
    ]);
    server.wait_for_line("up", Duration::from_secs(30));
    let script = format!("{} && {}", ask("web", 7000), ask("frontend", 7000));
    let out = berth.container_ok(&["--network", "app", IMAGE, "sh", "-c", &script]);
    assert_eq!(out, "pong\npong\n");
    // The server's /etc/hosts followed the client coming and going.
    let inspect = berth.run_ok(&["network", "inspect", "app"]);
    assert!(inspect.contains("\"web\""), "{inspect}");
    server.signal(nix::sys::signal::Signal::SIGTERM);
    server.wait(Duration::from_secs(20));
}

#[test]
fn containers_on_different_networks_do_not_reach_each_other() {
    let Some(berth) = bridge_berth() else { return };
    berth.run_ok(&["network", "create", "red"]);
    berth.run_ok(&["network", "create", "blue"]);
    let mut server = berth.spawn(&[
        "run",
        "--rm",
        "--init",
        "--name",
        "vault",
        "--network",
        "red",
        IMAGE,
        "sh",
        "-c",
        "ip -4 -o addr show eth0; exec nc -ll -p 7000 -e echo secret",
    ]);
    server.wait_for_line("inet ", Duration::from_secs(30));
    let addr_line = server.stdout_so_far();
    let ip = addr_line
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .unwrap_or_else(|| panic!("no address in {addr_line:?}"))
        .to_string();
    // Reachable from its own network, by address ...
    let same = berth.container_ok(&["--network", "red", IMAGE, "sh", "-c", &ask(&ip, 7000)]);
    assert_eq!(same, "secret\n");
    // ... and neither by name nor by address from another.
    let args = [
        "run",
        "--rm",
        "--network",
        "blue",
        IMAGE,
        "sh",
        "-c",
        "nc -w 2 vault 7000 </dev/null; echo name:$?",
    ];
    let other = stdout(&berth.cmd(&args));
    assert!(other.contains("name:1"), "{other}");
    let script = format!("nc -w 3 {ip} 7000 </dev/null; echo addr:$?");
    let args = [
        "run",
        "--rm",
        "--network",
        "blue",
        IMAGE,
        "sh",
        "-c",
        &script,
    ];
    let other = stdout(&berth.cmd(&args));
    assert!(
        !other.contains("secret") && other.contains("addr:1"),
        "blue reached red's container: {other}"
    );
    server.signal(nix::sys::signal::Signal::SIGTERM);
    server.wait(Duration::from_secs(20));
}

#[test]
fn a_user_defined_network_reaches_the_host_and_publishes_ports() {
    let Some(berth) = bridge_berth() else { return };
    berth.run_ok(&["network", "create", "pub"]);
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    let mut server = berth.spawn(&[
        "run",
        "--rm",
        "--init",
        "--network",
        "pub",
        "-p",
        &publish,
        IMAGE,
        "sh",
        "-c",
        "echo up; exec nc -ll -p 8080 -e cat",
    ]);
    server.wait_for_line("up", Duration::from_secs(30));
    let reply = tcp_ask(
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        "to the bridge\n",
        Duration::from_secs(20),
    );
    assert_eq!(reply, "to the bridge\n");
    server.signal(nix::sys::signal::Signal::SIGTERM);
    server.wait(Duration::from_secs(20));

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let hport = listener.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.write_all(b"host here\n");
        }
    });
    let script = format!("nc host.containers.internal {hport} </dev/null");
    let out = berth.container_ok(&["--network", "pub", IMAGE, "sh", "-c", &script]);
    assert_eq!(out, "host here\n");
    t.join().unwrap();
}

#[test]
fn network_commands_create_list_inspect_and_remove() {
    let Some(berth) = Berth::new() else { return };
    assert_eq!(berth.run_ok(&["network", "create", "one"]), "one\n");
    berth.run_ok(&["network", "create", "--subnet", "10.123.0.0/24", "two"]);
    let ls = berth.run_ok(&["network", "ls"]);
    assert!(
        ls.contains("10.89.1.0/24") && ls.contains("10.123.0.0/24"),
        "{ls}"
    );
    let args = ["network", "create", "one"];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 1);
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    let inspect = berth.run_ok(&["network", "inspect", "two"]);
    assert!(inspect.contains("\"gateway\": \"10.123.0.1\""), "{inspect}");
    let args = [
        "network",
        "ls",
        "--format",
        "table {{.Name}}\t{{.Subnet}}\t{{.Gateway}}",
    ];
    assert_eq!(
        lines(&berth.run_ok(&args)),
        [
            "NAME   SUBNET          GATEWAY",
            "one    10.89.1.0/24    10.89.1.1",
            "two    10.123.0.0/24   10.123.0.1",
        ]
    );
    let json = berth.run_ok(&["network", "ls", "--format", "json"]);
    let names: Vec<String> = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["Name"].to_string())
        .collect();
    assert_eq!(names, ["\"one\"", "\"two\""]);
    let args = ["network", "ls", "--format", "{{.Containers}}"];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 1);
    assert!(stderr(&out).contains("Containers"), "{}", stderr(&out));
    assert_eq!(berth.run_ok(&["network", "rm", "one"]), "one\n");
    assert_eq!(berth.run_ok(&["network", "prune"]), "two\n");
    assert_eq!(berth.run_ok(&["network", "ls", "-q"]), "");
    let args = ["run", "--rm", "--network", "nope", IMAGE, "true"];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 125);
    assert!(
        stderr(&out).contains("berth network create nope"),
        "{}",
        stderr(&out)
    );
}

/// `network rm -f` means Docker's "no error for a network that does not exist": a network in
/// use stays, and so do its containers and what they wrote; each error is printed once.
#[test]
fn network_rm_force_never_touches_the_containers_on_it() {
    let Some(berth) = bridge_berth() else { return };
    berth.run_ok(&["network", "create", "busy"]);
    berth.run_ok(&[
        "run",
        "-d",
        "--name",
        "keeper",
        "--network",
        "busy",
        IMAGE,
        "sh",
        "-c",
        "echo precious > /precious; exec sleep 300",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = berth.cmd(&["exec", "keeper", "cat", "/precious"]);
        if stdout(&out) == "precious\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the container never wrote /precious: {}",
            describe(&["exec", "keeper", "cat", "/precious"], &out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for args in [
        &["network", "rm", "busy"][..],
        &["network", "rm", "-f", "busy"],
    ] {
        let out = berth.cmd(args);
        assert_exit(args, &out, 1);
        let err = stderr(&out);
        assert_eq!(err.matches("in use").count(), 1, "printed once: {err}");
        assert!(err.contains("berth stop keeper"), "{err}");
    }
    // The container still runs, with what it wrote; the network is still there.
    assert_eq!(
        berth.run_ok(&["exec", "keeper", "cat", "/precious"]),
        "precious\n"
    );
    assert_eq!(berth.run_ok(&["network", "ls", "-q"]), "busy\n");
    // -f: a network that does not exist is no error; without it, one message.
    assert_eq!(berth.run_ok(&["network", "rm", "-f", "ghost"]), "");
    let args = ["network", "rm", "ghost"];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 1);
    assert_eq!(
        stderr(&out).matches("no such network").count(),
        1,
        "{}",
        stderr(&out)
    );
    berth.run_ok(&["rm", "-f", "keeper"]);
    assert_eq!(berth.run_ok(&["network", "rm", "busy"]), "busy\n");
}

/// The IPv4 address/prefix, hardware address and default gateway of a running container's
/// connected interface, as `ip` inside it tells them.
fn address_inside(berth: &Berth, name: &str) -> (String, String, String) {
    let script = "ip -4 -o addr show scope global; ip -o link; ip -4 route show default";
    let out = berth.run_ok(&["exec", name, "sh", "-c", script]);
    let addr_line = out
        .lines()
        .find(|l| l.contains(" inet "))
        .unwrap_or_else(|| panic!("no address in {out}"));
    let ifname = addr_line.split_whitespace().nth(1).unwrap().to_string();
    let cidr = addr_line
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap()
        .to_string();
    let mac = out
        .lines()
        .find(|l| l.contains(&format!(" {ifname}:")) || l.contains(&format!(" {ifname}@")))
        .and_then(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "link/ether")
                .nth(1)
        })
        .unwrap_or_else(|| panic!("no hardware address of {ifname} in {out}"))
        .to_string();
    let gateway = out
        .lines()
        .find(|l| l.starts_with("default via "))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_else(|| panic!("no default route in {out}"))
        .to_string();
    (cidr, mac, gateway)
}

/// `inspect` tells the address, prefix, gateway and hardware address the container really has,
/// in Docker's places (so `{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}` works),
/// and forgets them once it stops.
#[test]
fn inspect_shows_the_address_the_container_has() {
    let Some(berth) = bridge_berth() else { return };
    berth.run_ok(&["network", "create", "addrs"]);
    // "" is the default network: no --network at all.
    let mut networks = vec!["", "addrs"];
    networks.extend(BACKENDS.iter().filter(|b| have(b)));
    for asked in networks {
        let name = format!("where-{}", if asked.is_empty() { "default" } else { asked });
        let mut args = vec!["run", "-d", "--name", &name, "--network-alias", "nick"];
        if !asked.is_empty() {
            args.extend(["--network", asked]);
        }
        args.extend([IMAGE, "sleep", "300"]);
        berth.run_ok(&args);
        let mode = berth.run_ok(&["inspect", "-f", "{{.HostConfig.NetworkMode}}", &name]);
        let network = mode.trim();
        assert!(asked.is_empty() || asked == network, "{asked}: {network}");
        let (cidr, mac, gateway) = address_inside(&berth, &name);
        let (ip, prefix) = cidr.split_once('/').unwrap();
        let f = |template: &str| berth.run_ok(&["inspect", "-f", template, &name]);
        assert_eq!(
            f("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"),
            format!("{ip}\n"),
            "{network}"
        );
        let all = format!("{ip} {prefix} {gateway} {mac}\n");
        assert_eq!(
            f("{{.NetworkSettings.IPAddress}} {{.NetworkSettings.IPPrefixLen}} {{.NetworkSettings.Gateway}} {{.NetworkSettings.MacAddress}}"),
            all,
            "{network}"
        );
        let v: serde_json::Value =
            serde_json::from_str(&berth.run_ok(&["inspect", &name])).unwrap();
        let n = &v[0]["NetworkSettings"]["Networks"][network];
        assert_eq!(n["IPAddress"], ip, "{network}: {n}");
        assert_eq!(n["IPPrefixLen"].to_string(), prefix, "{network}: {n}");
        assert_eq!(n["Gateway"], gateway.as_str(), "{network}: {n}");
        assert_eq!(n["MacAddress"], mac.as_str(), "{network}: {n}");
        assert_eq!(n["Aliases"], serde_json::json!(["nick"]), "{network}: {n}");
        if network == "addrs" {
            let id = berth.run_ok(&["network", "ls", "--format", "{{.Name}} {{.ID}}"]);
            let short = id.trim().strip_prefix("addrs ").unwrap().to_string();
            let full = n["NetworkID"].as_str().unwrap();
            assert!(full.len() == 64 && full.starts_with(&short), "{n} vs {id}");
        }
        berth.run_ok(&["stop", "-t", "0", &name]);
        assert_eq!(
            f("{{range .NetworkSettings.Networks}}[{{.IPAddress}}]{{end}}"),
            "[]\n",
            "{network}: a stopped container has no address"
        );
        berth.run_ok(&["rm", &name]);
    }
}

#[test]
fn a_killed_berth_leaves_no_network_helper_running() {
    let Some(berth) = bridge_berth() else { return };
    berth.run_ok(&["network", "create", "doomed"]);
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    let mut runs: Vec<common::Running> = [
        vec![
            "run",
            "--rm",
            "-p",
            publish.as_str(),
            IMAGE,
            "sh",
            "-c",
            "echo up; sleep 60",
        ],
        vec![
            "run",
            "--rm",
            "--network",
            "pasta",
            IMAGE,
            "sh",
            "-c",
            "echo up; sleep 60",
        ],
        vec![
            "run",
            "--rm",
            "--network",
            "doomed",
            IMAGE,
            "sh",
            "-c",
            "echo up; sleep 60",
        ],
    ]
    .iter()
    .filter(|args| !args.contains(&"pasta") || have("pasta"))
    .map(|args| berth.spawn(args))
    .collect();
    for r in &mut runs {
        r.wait_for_line("up", Duration::from_secs(30));
    }
    for r in runs {
        r.signal(nix::sys::signal::Signal::SIGKILL);
        r.wait(Duration::from_secs(10));
    }
    // slirp4netns, pasta, the forwarder, the network daemon: the fixture's drop fails the
    // test if any of them is still there; and the published port is free again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpListener::bind(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "port {port} is still taken after berth was killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// --- detached and created containers ------------------------------------------------------------

/// The processes of this fixture whose command line names `what`, once those ending have gone.
fn running(berth: &Berth, what: &str) -> Vec<common::procs::Process> {
    common::procs::wait_until_gone(Duration::from_secs(5), || {
        berth
            .own_processes()
            .into_iter()
            .filter(|p| p.cmdline.contains(what))
            .collect()
    })
}

/// A detached container's network is set up by its monitor: the published port answers while
/// it runs, is free as soon as `berth stop` returns (with nothing of the network left running),
/// and answers again after `berth start`.
fn detached_container_publishes_a_port(network: &str, restart: bool) {
    let Some(berth) = berth_with(network) else {
        return;
    };
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    // One connection per run; with a restart policy the container fails after each, and the
    // monitor starts it again with its network set up anew.
    let script = if restart {
        "nc -l -p 8080 -e echo pong; exit 1"
    } else {
        "exec nc -ll -p 8080 -e echo pong"
    };
    let mut args = vec!["run", "-d", "--name", "web", "--network", network];
    if restart {
        args.extend(["--restart", "on-failure:5"]);
    }
    args.extend(["-p", &publish, IMAGE, "sh", "-c", script]);
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 0);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    assert_eq!(tcp_ask(addr, "", Duration::from_secs(30)), "pong\n");
    assert_eq!(tcp_ask(addr, "", Duration::from_secs(30)), "pong\n");
    assert_eq!(
        berth.run_ok(&["port", "web"]),
        format!("8080/tcp -> 127.0.0.1:{port}\n")
    );
    // -a: between two runs the container is restarting.
    let ps = berth.run_ok(&["ps", "-a"]);
    assert!(
        ps.contains(&format!("127.0.0.1:{port}->8080/tcp")),
        "berth ps does not show the port:\n{ps}"
    );
    let inspect = berth.run_ok(&["inspect", "web"]);
    let v: serde_json::Value = serde_json::from_str(&inspect).expect("inspect's JSON");
    assert_eq!(v[0]["HostConfig"]["NetworkMode"], network, "{inspect}");
    assert_eq!(
        v[0]["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"],
        port.to_string(),
        "{inspect}"
    );

    berth.run_ok(&["stop", "web"]);
    assert!(
        TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "the host port is still taken after berth stop returned"
    );
    let left = running(&berth, network);
    assert!(left.is_empty(), "{network} left running: {left:?}");

    berth.run_ok(&["start", "web"]);
    assert_eq!(tcp_ask(addr, "", Duration::from_secs(30)), "pong\n");
    berth.run_ok(&["rm", "-f", "web"]);
    assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
}

#[test]
fn a_detached_container_publishes_ports_slirp4netns() {
    detached_container_publishes_a_port("slirp4netns", true);
}

#[test]
fn a_detached_container_publishes_ports_pasta() {
    detached_container_publishes_a_port("pasta", false);
}

#[test]
fn detached_containers_get_the_default_network() {
    let Some(berth) = berth_with("slirp4netns") else {
        return;
    };
    let args = [
        "run",
        "-d",
        "--name",
        "plain",
        IMAGE,
        "sh",
        "-c",
        "while :; do sleep 0.1; done",
    ];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 0);
    let dev = berth.run_ok(&["exec", "plain", "cat", "/proc/net/dev"]);
    assert!(
        interfaces(&dev).contains(&"tap0".to_string()),
        "no tap0 in a detached container's default network: {dev}"
    );
    let resolv = berth.run_ok(&["exec", "plain", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 10.0.2.3"), "{resolv}");
    berth.run_ok(&["rm", "-f", "plain"]);
}

#[test]
fn created_containers_join_a_user_defined_network_when_started() {
    let Some(berth) = bridge_berth() else { return };
    berth.run_ok(&["network", "create", "app"]);
    // What can be checked without starting is checked by create.
    for (args, says) in [
        (
            vec![
                "create",
                "--network",
                "none",
                "-p",
                "8080:80",
                IMAGE,
                "true",
            ],
            "--network none",
        ),
        (
            vec!["create", "--network", "nope", IMAGE, "true"],
            "berth network create nope",
        ),
    ] {
        let out = berth.cmd(&args);
        assert_exit(&args, &out, 1);
        assert!(stderr(&out).contains(says), "{}", describe(&args, &out));
    }
    berth.run_ok(&[
        "create",
        "--name",
        "db",
        "--network",
        "app",
        "--network-alias",
        "pg",
        IMAGE,
        "sh",
        "-c",
        "exec nc -ll -p 7000 -e echo pong",
    ]);
    assert!(
        berth.own_processes().is_empty(),
        "a created container runs nothing: {:?}",
        berth.own_processes()
    );
    for _ in 0..2 {
        berth.run_ok(&["start", "db"]);
        let out = berth.container_ok(&["--network", "app", IMAGE, "sh", "-c", &ask("pg", 7000)]);
        assert_eq!(out, "pong\n");
        let inspect = berth.run_ok(&["network", "inspect", "app"]);
        assert!(inspect.contains("\"db\""), "{inspect}");
        // Stopped, it leaves the network, and the daemon goes with the last container.
        berth.run_ok(&["stop", "db"]);
        let left = running(&berth, "netns-daemon");
        assert!(
            left.is_empty(),
            "the network daemon is still running: {left:?}"
        );
    }
    berth.run_ok(&["rm", "db"]);
}
