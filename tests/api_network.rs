//! Networks, volumes and ports over the Docker Engine API (`berth system service`), driven by
//! the real docker CLI (28.x, on PATH) through the real socket, as the unprivileged test user:
//! `docker network ...`, `docker volume ...`, `-v`/`--mount`, containers reaching each other
//! by name on a user-defined network, and published ports reached from the host.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::api::{raw_request, Service};
use common::{describe, free_port, have, skip, stderr, tcp_ask, Berth, IMAGE};

/// The fixture and its service, or `None` (skipped, with the reason printed) where the docker
/// CLI, the test user or the tools of user-defined networks are missing.
fn setup() -> Option<(Berth, Service)> {
    for tool in ["docker", "slirp4netns", "iptables", "ip"] {
        if !have(tool) {
            skip(&format!(
                "{tool} is not installed (scripts/setup-host installs it)"
            ));
            return None;
        }
    }
    let berth = Berth::new()?;
    let service = Service::start(&berth);
    Some((berth, service))
}

/// `docker ARGS` must fail; its stderr.
fn docker_fails(api: &Service, berth: &Berth, args: &[&str]) -> String {
    let out = api.docker(berth, args);
    assert!(!out.status.success(), "docker {}", describe(args, &out));
    stderr(&out)
}

/// `docker network inspect NETWORK -f FORMAT`, trimmed.
fn network_inspect(api: &Service, berth: &Berth, network: &str, format: &str) -> String {
    api.docker_ok(berth, &["network", "inspect", network, "-f", format])
        .trim()
        .to_string()
}

/// A client script that retries until the server answers (it may still be starting) and
/// prints the answer, or `no answer from HOST`.
fn ask(host: &str, port: u16, tries: u32) -> String {
    format!(
        "(for i in $(seq {tries}); do r=$(nc -w 2 {host} {port} </dev/null 2>/dev/null) && [ -n \"$r\" ] && echo \"$r\" && exit 0; sleep 0.1; done; echo no answer from {host})"
    )
}

#[test]
fn docker_network_ls_create_inspect_rm_prune() {
    let Some((berth, api)) = setup() else { return };
    // The built-in networks, berth's default network as Docker's bridge.
    let names = api.docker_ok(&berth, &["network", "ls", "--format", "{{.Name}}"]);
    for n in ["bridge", "host", "none"] {
        assert!(names.lines().any(|l| l == n), "network ls: {names}");
    }
    let bridge = network_inspect(
        &api,
        &berth,
        "bridge",
        "{{.Name}} {{.Driver}} {{.Scope}} {{len .Id}}",
    );
    assert_eq!(bridge.trim(), "bridge bridge local 64");

    // create: labels and a subnet of one's own; the name twice is a conflict.
    let id = api.docker_ok(
        &berth,
        &[
            "network",
            "create",
            "--label",
            "team=blue",
            "--subnet",
            "10.91.0.0/24",
            "front",
        ],
    );
    let id = id.trim();
    assert_eq!(id.len(), 64, "network create prints the id: {id}");
    let err = docker_fails(&api, &berth, &["network", "create", "front"]);
    assert!(err.contains("already exists"), "{err}");
    api.docker_ok(&berth, &["network", "create", "back"]);
    let shown = network_inspect(&api, &berth, "front", "{{.Id}} {{.Driver}} {{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}} {{.Labels.team}}");
    assert_eq!(
        shown.trim(),
        format!("{id} bridge 10.91.0.0/24 10.91.0.1 blue")
    );
    // By id prefix too.
    let by_id = api.docker_ok(
        &berth,
        &["network", "inspect", &id[..12], "-f", "{{.Name}}"],
    );
    assert_eq!(by_id.trim(), "front");

    // Filters: label, type, name, driver.
    let ls = |filter: &str| -> Vec<String> {
        let out = api.docker_ok(
            &berth,
            &["network", "ls", "--filter", filter, "--format", "{{.Name}}"],
        );
        let mut v: Vec<String> = out.lines().map(String::from).collect();
        v.sort();
        v
    };
    assert_eq!(ls("label=team=blue"), ["front"]);
    assert_eq!(ls("type=custom"), ["back", "front"]);
    assert_eq!(ls("type=builtin"), ["bridge", "host", "none"]);
    assert_eq!(ls("name=fro"), ["front"]);
    assert_eq!(ls("driver=null"), ["none"]);

    // What berth cannot make is refused with the reason; a built-in network stays.
    let err = docker_fails(
        &api,
        &berth,
        &["network", "create", "--driver", "overlay", "o"],
    );
    assert!(err.contains("berth's networks are bridges"), "{err}");
    let err = docker_fails(&api, &berth, &["network", "rm", "bridge"]);
    assert!(err.contains("pre-defined network"), "{err}");
    let err = docker_fails(&api, &berth, &["network", "inspect", "nope"]);
    assert!(err.contains("not found"), "{err}");

    // prune by label takes front only; rm takes back.
    let pruned = api.docker_ok(
        &berth,
        &["network", "prune", "-f", "--filter", "label=team=blue"],
    );
    assert!(pruned.contains("front"), "{pruned}");
    assert_eq!(ls("type=custom"), ["back"]);
    api.docker_ok(&berth, &["network", "rm", "back"]);
    assert!(ls("type=custom").is_empty());
    // The berth CLI sees the same networks.
    api.docker_ok(&berth, &["network", "create", "shared"]);
    assert_eq!(
        berth.run_ok(&["network", "ls", "-q"]).trim(),
        "shared",
        "berth network ls"
    );
    let pruned = api.docker_ok(&berth, &["network", "prune", "-f"]);
    assert!(pruned.contains("shared"), "{pruned}");
}

#[test]
fn containers_on_a_user_defined_network_reach_each_other_by_name_and_alias() {
    let Some((berth, api)) = setup() else { return };
    let net_id = api.docker_ok(&berth, &["network", "create", "app"]);
    let net_id = net_id.trim();
    api.docker_ok(
        &berth,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "app",
            "--network-alias",
            "frontend",
            IMAGE,
            "nc",
            "-ll",
            "-p",
            "7000",
            "-e",
            "echo",
            "pong",
        ],
    );
    let script = format!(
        "{} && {}",
        ask("web", 7000, 100),
        ask("frontend", 7000, 100)
    );
    let out = api.docker_ok(
        &berth,
        &[
            "run",
            "--rm",
            "--network",
            "app",
            IMAGE,
            "sh",
            "-c",
            &script,
        ],
    );
    assert_eq!(out, "pong\npong\n");
    // inspect: the address on the network, the network's id, and the network's members.
    let ip = api.docker_ok(
        &berth,
        &[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            "web",
        ],
    );
    assert!(ip.trim().starts_with("10.89."), "address: {ip}");
    let shown = api.docker_ok(
        &berth,
        &[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.app.NetworkID}} {{.HostConfig.NetworkMode}} {{json .NetworkSettings.Ports}}",
            "web",
        ],
    );
    assert_eq!(shown.trim(), format!("{net_id} app {{}}"));
    let members = network_inspect(
        &api,
        &berth,
        "app",
        "{{range .Containers}}{{.Name}} {{.IPv4Address}}{{end}}",
    );
    assert_eq!(members.trim(), format!("web {}/24", ip.trim()));
    // A network with a running container stays.
    let err = docker_fails(&api, &berth, &["network", "rm", "app"]);
    assert!(err.contains("active endpoints"), "{err}");
    api.docker_ok(&berth, &["rm", "-f", "web"]);
    api.docker_ok(&berth, &["network", "rm", "app"]);
}

#[test]
fn docker_network_connect_and_disconnect() {
    let Some((berth, api)) = setup() else { return };
    api.docker_ok(&berth, &["network", "create", "inner"]);
    api.docker_ok(&berth, &["network", "create", "outer"]);
    api.docker_ok(
        &berth,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "inner",
            IMAGE,
            "nc",
            "-ll",
            "-p",
            "7000",
            "-e",
            "echo",
            "pong",
        ],
    );
    let from_outer = |script: &str| -> String {
        api.docker_ok(
            &berth,
            &[
                "run",
                "--rm",
                "--network",
                "outer",
                IMAGE,
                "sh",
                "-c",
                script,
            ],
        )
    };
    // Not on outer yet: its name means nothing there.
    assert_eq!(from_outer(&ask("web", 7000, 3)), "no answer from web\n");
    // Connected while it runs: reached by name and alias at once.
    api.docker_ok(
        &berth,
        &["network", "connect", "--alias", "site", "outer", "web"],
    );
    let script = format!("{} && {}", ask("web", 7000, 100), ask("site", 7000, 100));
    assert_eq!(from_outer(&script), "pong\npong\n");
    let nets = api.docker_ok(
        &berth,
        &[
            "inspect",
            "-f",
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
            "web",
        ],
    );
    assert_eq!(nets.trim(), "inner outer");
    let members = network_inspect(
        &api,
        &berth,
        "outer",
        "{{range .Containers}}{{.Name}}{{end}}",
    );
    assert_eq!(members.trim(), "web");
    let err = docker_fails(&api, &berth, &["network", "connect", "outer", "web"]);
    assert!(err.contains("already"), "{err}");
    let err = docker_fails(&api, &berth, &["network", "rm", "outer"]);
    assert!(err.contains("active endpoints"), "{err}");
    // Disconnected: unreachable from outer again, still there on inner.
    api.docker_ok(&berth, &["network", "disconnect", "outer", "web"]);
    assert_eq!(from_outer(&ask("web", 7000, 3)), "no answer from web\n");
    let out = api.docker_ok(
        &berth,
        &[
            "run",
            "--rm",
            "--network",
            "inner",
            IMAGE,
            "sh",
            "-c",
            &ask("web", 7000, 100),
        ],
    );
    assert_eq!(out, "pong\n");
    let err = docker_fails(&api, &berth, &["network", "disconnect", "outer", "web"]);
    assert!(err.contains("is not connected"), "{err}");
    // A connection lasts: connected again, it is on outer after a restart too.
    api.docker_ok(&berth, &["network", "connect", "outer", "web"]);
    api.docker_ok(&berth, &["restart", "-t", "0", "web"]);
    assert_eq!(from_outer(&ask("web", 7000, 100)), "pong\n");

    // A container that is not running starts on the network it was connected to.
    // (It waits for its interfaces: a further network is joined just after the start.)
    let count = "for i in $(seq 100); do [ $(ip -4 -o addr show | grep -c eth) = 2 ] && echo two && exit; sleep 0.1; done; echo not two";
    api.docker_ok(
        &berth,
        &["create", "--name", "later", IMAGE, "sh", "-c", count],
    );
    api.docker_ok(&berth, &["network", "connect", "inner", "later"]);
    let mode =
        |c: &str| api.docker_ok(&berth, &["inspect", "-f", "{{.HostConfig.NetworkMode}}", c]);
    assert_eq!(mode("later").trim(), "inner");
    // Connected to one more before it starts, it starts on both.
    api.docker_ok(&berth, &["network", "connect", "outer", "later"]);
    assert_eq!(api.docker_ok(&berth, &["start", "-a", "later"]), "two\n");
    // `docker run --network a --network b`: on both from the start.
    let out = api.docker_ok(
        &berth,
        &[
            "run",
            "--rm",
            "--network",
            "inner",
            "--network",
            "outer",
            IMAGE,
            "sh",
            "-c",
            count,
        ],
    );
    assert_eq!(out, "two\n");
    api.docker_ok(&berth, &["network", "disconnect", "outer", "later"]);
    api.docker_ok(&berth, &["network", "disconnect", "inner", "later"]);
    assert_eq!(mode("later").trim(), "bridge");
    // The berth CLI does the same.
    berth.run_ok(&["network", "connect", "outer", "later"]);
    assert_eq!(mode("later").trim(), "outer");
    // A running container on the default network has no way onto another one but a restart.
    api.docker_ok(
        &berth,
        &["run", "-d", "--name", "plain", IMAGE, "sleep", "60"],
    );
    let err = docker_fails(&api, &berth, &["network", "connect", "outer", "plain"]);
    assert!(err.contains("default network"), "{err}");
    api.docker_ok(&berth, &["rm", "-f", "web", "later", "plain"]);
    api.docker_ok(&berth, &["network", "rm", "inner", "outer"]);
}

#[test]
fn published_ports_reach_the_container_from_the_host() {
    let Some((berth, api)) = setup() else { return };
    let port = free_port();
    let publish = format!("{port}:80");
    let id = api.docker_ok(
        &berth,
        &[
            "run", "-d", "-p", &publish, IMAGE, "nc", "-ll", "-p", "80", "-e", "echo", "hi",
        ],
    );
    let id = id.trim();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(tcp_ask(addr, "", Duration::from_secs(30)), "hi\n");
    // The default network is Docker's bridge, with the container's address and its id.
    let shown = api.docker_ok(
        &berth,
        &[
            "inspect",
            "-f",
            "{{.HostConfig.NetworkMode}} {{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{$v.NetworkID}} {{$v.IPAddress}}{{end}}",
            id,
        ],
    );
    let bridge_id = network_inspect(&api, &berth, "bridge", "{{.Id}}");
    let fields: Vec<&str> = shown.split_whitespace().collect();
    assert_eq!(fields.len(), 4, "{shown}");
    assert_eq!(
        &fields[..3],
        ["bridge", "bridge", bridge_id.trim()],
        "{shown}"
    );
    assert!(fields[3].parse::<std::net::Ipv4Addr>().is_ok(), "{shown}");
    let members = network_inspect(
        &api,
        &berth,
        "bridge",
        "{{range $k, $v := .Containers}}{{$k}}{{end}}",
    );
    assert_eq!(members.trim(), id);
    // --network bridge and default are the same network.
    for mode in ["bridge", "default"] {
        let out = api.docker_ok(
            &berth,
            &[
                "run",
                "--rm",
                "--network",
                mode,
                IMAGE,
                "sh",
                "-c",
                "ip -4 -o addr show | grep -vc ' lo '",
            ],
        );
        assert_eq!(out, "1\n", "--network {mode}: one interface besides lo");
    }
    let ports = api.docker_ok(&berth, &["port", id]);
    assert!(
        ports.contains(&format!("80/tcp -> 0.0.0.0:{port}")),
        "docker port: {ports}"
    );

    // -P: every exposed port (here --expose's) on a free host port, which `docker port` tells.
    let id2 = api.docker_ok(
        &berth,
        &[
            "run", "-d", "-P", "--expose", "8080", IMAGE, "nc", "-ll", "-p", "8080", "-e", "echo",
            "there",
        ],
    );
    let id2 = id2.trim();
    let bound = api.docker_ok(&berth, &["port", id2, "8080"]);
    let line = bound.lines().next().unwrap_or_default();
    let host_port: u16 = line
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("docker port {id2} 8080: {bound}"));
    let addr: SocketAddr = format!("127.0.0.1:{host_port}").parse().unwrap();
    assert_eq!(tcp_ask(addr, "", Duration::from_secs(30)), "there\n");
    api.docker_ok(&berth, &["rm", "-f", id, id2]);
}

#[test]
fn docker_volume_ls_create_inspect_rm_prune() {
    let Some((berth, api)) = setup() else { return };
    let name = api.docker_ok(&berth, &["volume", "create", "--label", "app=shop", "data"]);
    assert_eq!(name.trim(), "data");
    let shown = api.docker_ok(
        &berth,
        &[
            "volume",
            "inspect",
            "-f",
            "{{.Name}} {{.Driver}} {{.Scope}} {{.Labels.app}} {{.Mountpoint}}",
            "data",
        ],
    );
    let fields: Vec<&str> = shown.split_whitespace().collect();
    assert_eq!(&fields[..4], ["data", "local", "local", "shop"], "{shown}");
    assert!(fields[4].ends_with("/data/_data"), "{shown}");
    // What the local driver cannot honour is refused, saying why.
    let err = docker_fails(
        &api,
        &berth,
        &["volume", "create", "--opt", "type=tmpfs", "t"],
    );
    assert!(err.contains("cannot be honoured"), "{err}");
    let err = docker_fails(&api, &berth, &["volume", "create", "-d", "nfs", "n"]);
    assert!(err.contains("local driver"), "{err}");

    // -v NAME:/path and --mount type=volume see the same data.
    api.docker_ok(
        &berth,
        &[
            "run",
            "--rm",
            "-v",
            "data:/data",
            IMAGE,
            "sh",
            "-c",
            "echo kept > /data/f",
        ],
    );
    let out = api.docker_ok(
        &berth,
        &[
            "run",
            "--rm",
            "--mount",
            "type=volume,src=data,dst=/d,readonly",
            IMAGE,
            "sh",
            "-c",
            "cat /d/f; touch /d/g 2>/dev/null || echo read-only",
        ],
    );
    assert_eq!(out, "kept\nread-only\n");

    // A volume a container uses stays; ls tells used from dangling.
    api.docker_ok(
        &berth,
        &["create", "--name", "holder", "-v", "data:/data", IMAGE],
    );
    api.docker_ok(&berth, &["volume", "create", "spare"]);
    let err = docker_fails(&api, &berth, &["volume", "rm", "data"]);
    assert!(err.contains("in use"), "{err}");
    let ls = |filter: &str| -> String {
        api.docker_ok(&berth, &["volume", "ls", "-q", "--filter", filter])
    };
    assert_eq!(ls("dangling=false"), "data\n");
    assert_eq!(ls("dangling=true"), "spare\n");
    assert_eq!(ls("label=app=shop"), "data\n");
    assert_eq!(ls("name=spa"), "spare\n");
    api.docker_ok(&berth, &["rm", "holder"]);
    api.docker_ok(&berth, &["volume", "rm", "data"]);
    let err = docker_fails(&api, &berth, &["volume", "inspect", "data"]);
    assert!(err.contains("no such volume"), "{err}");
    // -f: a volume that is not there is no error.
    api.docker_ok(&berth, &["volume", "rm", "-f", "data"]);

    // prune: anonymous volumes by default, named ones too with -a (by label here).
    api.docker_ok(
        &berth,
        &["run", "--name", "anon", "-v", "/scratch", IMAGE, "true"],
    );
    api.docker_ok(&berth, &["rm", "anon"]);
    api.docker_ok(
        &berth,
        &["volume", "create", "--label", "tmp=1", "labelled"],
    );
    let before: Vec<String> = api
        .docker_ok(&berth, &["volume", "ls", "-q"])
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(before.len(), 3, "anonymous, labelled, spare: {before:?}");
    api.docker_ok(&berth, &["volume", "prune", "-f"]);
    assert_eq!(
        api.docker_ok(&berth, &["volume", "ls", "-q"]),
        "labelled\nspare\n"
    );
    api.docker_ok(
        &berth,
        &["volume", "prune", "-af", "--filter", "label=tmp=1"],
    );
    assert_eq!(api.docker_ok(&berth, &["volume", "ls", "-q"]), "spare\n");
}

#[test]
fn bind_mounts_through_the_api() {
    let Some((berth, api)) = setup() else { return };
    let dir = berth.host_mkdir("shared");
    berth.host_file("shared/hello", "from the host\n");
    let bind = format!("{}:/h", dir.display());
    let out = api.docker_ok(
        &berth,
        &[
            "run",
            "--rm",
            "-v",
            &bind,
            IMAGE,
            "sh",
            "-c",
            "cat /h/hello; echo back > /h/reply",
        ],
    );
    assert_eq!(out, "from the host\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("reply")).unwrap(),
        "back\n"
    );
    let mount = format!("type=bind,src={},dst=/h,readonly", dir.display());
    let out = api.docker_ok(
        &berth,
        &[
            "run",
            "--rm",
            "--mount",
            &mount,
            IMAGE,
            "sh",
            "-c",
            "cat /h/reply; touch /h/x 2>/dev/null || echo read-only",
        ],
    );
    assert_eq!(out, "back\nread-only\n");
    // A source that does not exist is the client's mistake, said as such.
    let err = docker_fails(
        &api,
        &berth,
        &[
            "run",
            "--rm",
            "--mount",
            "type=bind,src=/no/such/dir,dst=/h",
            IMAGE,
            "true",
        ],
    );
    assert!(err.contains("/no/such/dir"), "{err}");
}

#[test]
fn hostile_network_and_volume_requests_get_a_4xx_and_the_service_serves_on() {
    let Some((berth, api)) = setup() else { return };
    let send = |method: &str, path: &str, body: &str| {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: berth\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        raw_request(&api.socket, req.as_bytes())
    };
    for (method, path, body, code) in [
        ("POST", "/v1.47/networks/create", "{not json", " 400 "),
        (
            "POST",
            "/v1.47/networks/create",
            r#"{"Name": "../up"}"#,
            " 400 ",
        ),
        (
            "POST",
            "/v1.47/networks/create",
            r#"{"Name": "n", "IPAM": {"Config": [{"Subnet": "bogus"}]}}"#,
            " 400 ",
        ),
        (
            "POST",
            "/v1.47/networks/create",
            r#"{"Name": "host"}"#,
            " 403 ",
        ),
        ("GET", "/v1.47/networks?filters=%7Bx", "", " 400 "),
        (
            "GET",
            "/v1.47/networks?filters=%7B%22color%22%3A%5B%22red%22%5D%7D",
            "",
            " 400 ",
        ),
        ("DELETE", "/v1.47/networks/..%2F..%2Fetc", "", " 404 "),
        (
            "POST",
            "/v1.47/networks/nope/connect",
            r#"{"Container": "x"}"#,
            " 404 ",
        ),
        (
            "POST",
            "/v1.47/volumes/create",
            r#"{"Name": "../../etc"}"#,
            " 400 ",
        ),
        ("POST", "/v1.47/volumes/create", r#"{"Name": 7}"#, " 400 "),
        ("GET", "/v1.47/volumes/..%2F..%2Fetc", "", " 404 "),
        ("DELETE", "/v1.47/volumes/..%2F..%2Fetc", "", " 404 "),
        (
            "GET",
            "/v1.47/volumes?filters=%7B%22dangling%22%3A%5B%22maybe%22%5D%7D",
            "",
            " 400 ",
        ),
        (
            "POST",
            "/v1.47/volumes/prune?filters=%7B%22until%22%3A%5B%221h%22%5D%7D",
            "",
            " 400 ",
        ),
    ] {
        let (status, reply) = send(method, path, body);
        assert!(
            status.contains(code),
            "{method} {path} {body}: {status} {reply}"
        );
        assert!(reply.contains("\"message\""), "{method} {path}: {reply}");
    }
    // Nothing was made, and the service still answers.
    assert_eq!(
        api.docker_ok(&berth, &["network", "ls", "-q", "--filter", "type=custom"]),
        ""
    );
    assert_eq!(api.docker_ok(&berth, &["volume", "ls", "-q"]), "");
}
