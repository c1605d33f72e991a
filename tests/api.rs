//! The Docker Engine API (`berth system service`) driven by the real docker CLI (28.x, on
//! PATH) through the real socket, as the unprivileged test user: the containers' life, their
//! streams, errors with Docker's codes, the CLI and the API seeing the same containers, many
//! clients at once, hostile requests, and a daemon killed and started again.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::api::{raw_request, setup, Service};
use common::{code, describe, have, skip, stderr, stdout, Berth, IMAGE};

#[test]
fn the_docker_cli_sees_berth_as_its_engine() {
    let Some((berth, api)) = setup() else { return };
    let version = api.docker_ok(
        &berth,
        &[
            "version",
            "--format",
            "{{.Server.APIVersion}} {{.Server.Os}}",
        ],
    );
    assert_eq!(version.trim(), "1.47 linux");
    let info = api.docker_ok(
        &berth,
        &[
            "info",
            "--format",
            "{{.DefaultRuntime}} {{range $k, $v := .Runtimes}}{{$k}},{{end}} {{.OSType}}",
        ],
    );
    assert_eq!(info.trim(), "berth berth,vm, linux", "docker info: {info}");
    // The socket is the user's alone.
    let mode = std::fs::metadata(&api.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    // `berth info` says how to point a client at the default socket.
    let text = berth.run_ok(&["info"]);
    assert!(
        text.contains(&format!(
            "DOCKER_HOST=unix://{}/berth.sock",
            berth.root.join("run").display()
        )),
        "berth info names the default socket: {text}"
    );
}

#[test]
fn docker_run_streams_output_and_returns_the_status() {
    let Some((berth, api)) = setup() else { return };
    let args = [
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "echo to-stdout; echo to-stderr >&2; exit 3",
    ];
    let out = api.docker(&berth, &args);
    assert_eq!(code(&out), 3, "{}", describe(&args, &out));
    assert_eq!(stdout(&out), "to-stdout\n", "{}", describe(&args, &out));
    assert_eq!(stderr(&out), "to-stderr\n", "{}", describe(&args, &out));
    // --rm: nothing is left.
    assert_eq!(api.docker_ok(&berth, &["ps", "-a", "-q"]), "");
    // stdin reaches the container (-i), its end as EOF.
    let args = ["run", "--rm", "-i", IMAGE, "sh", "-c", "cat; echo eof-seen"];
    let out = api.docker_with_stdin(&berth, &args, b"line one\nline two\n");
    assert_eq!(
        stdout(&out),
        "line one\nline two\neof-seen\n",
        "{}",
        describe(&args, &out)
    );
}

#[test]
fn a_detached_container_lives_through_the_api() {
    let Some((berth, api)) = setup() else { return };
    let id = api.docker_ok(
        &berth,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--label",
            "app=shop",
            "--label",
            "tier",
            IMAGE,
            "sh",
            "-c",
            "echo started; trap 'echo got-term; exit 7' TERM; while :; do sleep 0.1; done",
        ],
    );
    let id = id.trim();
    assert_eq!(id.len(), 64, "run -d prints the id: {id}");
    // ps: filters by label (each must hold), formats.
    let shown = api.docker_ok(
        &berth,
        &[
            "ps",
            "--filter",
            "label=app=shop",
            "--filter",
            "label=tier",
            "--format",
            "{{.Names}} {{.State}} {{.Label \"app\"}}",
        ],
    );
    assert_eq!(shown.trim(), "web running shop");
    let none = api.docker_ok(
        &berth,
        &[
            "ps",
            "--filter",
            "label=app=other",
            "--format",
            "{{.Names}}",
        ],
    );
    assert_eq!(none.trim(), "");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !api.docker_ok(&berth, &["logs", "web"]).contains("started") {
        assert!(Instant::now() < deadline, "no output in docker logs");
        std::thread::sleep(Duration::from_millis(50));
    }
    let inspect = api.docker_ok(
        &berth,
        &[
            "inspect",
            "-f",
            "{{.Id}} {{.Name}} {{.State.Status}} {{.State.Running}} {{.Config.Image}} {{index .Config.Labels \"app\"}}",
            "web",
        ],
    );
    assert_eq!(
        inspect.trim(),
        format!("{id} /web running true {IMAGE} shop")
    );
    // The berth CLI sees what the API made.
    let cli = berth.run_ok(&["ps", "--format", "{{.Names}} {{.State}}"]);
    assert_eq!(cli.trim(), "web running");
    // stop: the trap runs (SIGTERM reached the process), the status is its own.
    api.docker_ok(&berth, &["stop", "-t", "20", "web"]);
    let status = api.docker_ok(&berth, &["wait", "web"]);
    assert_eq!(status.trim(), "7");
    assert!(api.docker_ok(&berth, &["logs", "web"]).contains("got-term"));
    // Stopping a stopped container changes nothing (304 to the client, no error).
    api.docker_ok(&berth, &["stop", "web"]);
    api.docker_ok(&berth, &["start", "web"]);
    api.docker_ok(&berth, &["kill", "web"]);
    assert_eq!(api.docker_ok(&berth, &["wait", "web"]).trim(), "137");
    api.docker_ok(&berth, &["rename", "web", "shop"]);
    api.docker_ok(&berth, &["rm", "shop"]);
    assert_eq!(api.docker_ok(&berth, &["ps", "-a", "-q"]), "");
}

#[test]
fn the_cli_and_the_api_share_their_containers() {
    let Some((berth, api)) = setup() else { return };
    berth.run_ok(&["run", "-d", "--name", "from-cli", IMAGE, "sleep", "1000"]);
    let ps = api.docker_ok(&berth, &["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.starts_with("from-cli Up"), "docker ps: {ps}");
    api.docker_ok(
        &berth,
        &["run", "-d", "--name", "from-api", IMAGE, "sleep", "1000"],
    );
    let mine = berth.run_ok(&["ps", "--format", "{{.Names}}"]);
    let mut names: Vec<&str> = mine.lines().collect();
    names.sort();
    assert_eq!(names, ["from-api", "from-cli"]);
    // The API's rm -f of a container the CLI made, and the other way round.
    api.docker_ok(&berth, &["rm", "-f", "from-cli"]);
    berth.run_ok(&["rm", "-f", "from-api"]);
    assert_eq!(api.docker_ok(&berth, &["ps", "-a", "-q"]), "");
}

#[test]
fn errors_carry_docker_s_codes_and_say_what_to_do() {
    let Some((berth, api)) = setup() else { return };
    let args = ["rm", "no-such-container"];
    let out = api.docker(&berth, &args);
    assert_eq!(code(&out), 1, "{}", describe(&args, &out));
    assert!(
        stderr(&out).contains("no such container: no-such-container"),
        "{}",
        describe(&args, &out)
    );
    api.docker_ok(&berth, &["create", "--name", "taken", IMAGE, "true"]);
    let args = ["create", "--name", "taken", IMAGE, "true"];
    let out = api.docker(&berth, &args);
    assert_ne!(code(&out), 0);
    assert!(
        stderr(&out).contains("is already in use"),
        "{}",
        describe(&args, &out)
    );
    // A microVM refuses what it cannot honour, in the engine, for the API as for the CLI.
    let args = [
        "create",
        "--runtime",
        "vm",
        "--cap-add",
        "NET_ADMIN",
        IMAGE,
        "true",
    ];
    let out = api.docker(&berth, &args);
    assert!(
        stderr(&out).contains("not available with --vm"),
        "{}",
        describe(&args, &out)
    );
    let args = ["create", "--runtime", "gvisor", IMAGE, "true"];
    let out = api.docker(&berth, &args);
    assert!(
        stderr(&out).contains("unknown runtime \"gvisor\""),
        "{}",
        describe(&args, &out)
    );
    api.docker_ok(&berth, &["rm", "taken"]);
}

#[test]
fn hostile_requests_get_a_json_4xx_and_the_daemon_serves_on() {
    let Some((berth, api)) = setup() else { return };
    let post = |path: &str, body: &[u8]| {
        api.send(
            &format!("POST {path} HTTP/1.1\r\nContent-Type: application/json"),
            body,
        )
    };
    let (status, body) = post("/v1.47/containers/create", b"{not json");
    assert!(status.contains(" 400 "), "{status} {body}");
    assert!(body.contains("\"message\""), "{body}");
    let (status, body) = post("/v1.47/containers/create", br#"{"Image": 42}"#);
    assert!(status.contains(" 400 "), "{status} {body}");
    let (status, _) = post(
        "/v1.47/containers/create",
        format!(r#"{{"Image": "{IMAGE}", "Unknown": {{"x": 1}}, "Cmd": ["true"]}}"#).as_bytes(),
    );
    assert!(
        status.contains(" 201 "),
        "unknown fields are ignored: {status}"
    );
    let huge = vec![b' '; 64 << 20];
    let (status, _) = post("/v1.47/containers/create", &huge);
    assert!(
        status.contains(" 413 ") || status.is_empty(),
        "a 64 MiB body is refused: {status}"
    );
    let (status, body) = raw_request(
        &api.socket,
        b"GET /v1.47/containers/../../etc/passwd/json HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n",
    );
    assert!(status.contains(" 404 "), "{status} {body}");
    let (status, body) = raw_request(
        &api.socket,
        b"GET /v1.12/version HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n",
    );
    assert!(
        status.contains(" 400 ") && body.contains("too old"),
        "{status} {body}"
    );
    // Still serving.
    api.docker_ok(&berth, &["version"]);
    api.docker_ok(&berth, &["container", "prune", "-f"]);
}

#[test]
fn many_clients_at_once_start_and_remove_fifty_containers() {
    let Some((berth, api)) = setup() else { return };
    let names: Vec<String> = (0..50).map(|i| format!("many-{i}")).collect();
    let children: Vec<_> = names
        .iter()
        .map(|n| {
            let mut cmd = api.client(
                &berth,
                "docker",
                &["run", "-d", "--name", n, IMAGE, "sleep", "1000"],
            );
            cmd.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().expect("docker run -d")
        })
        .collect();
    for (child, n) in children.into_iter().zip(&names) {
        let out = child.wait_with_output().expect("docker run -d");
        assert!(
            out.status.success(),
            "docker run -d --name {n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ps = api.docker_ok(&berth, &["ps", "--format", "{{.Names}}"]);
    let mut shown: Vec<&str> = ps.lines().collect();
    shown.sort();
    let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(shown, want);
    let mut rm = vec!["rm", "-f"];
    rm.extend(names.iter().map(String::as_str));
    api.docker_ok(&berth, &rm);
    assert_eq!(api.docker_ok(&berth, &["ps", "-a", "-q"]), "");
}

#[test]
fn a_killed_daemon_loses_no_container() {
    let Some((berth, mut api)) = setup() else {
        return;
    };
    api.docker_ok(
        &berth,
        &["run", "-d", "--name", "survivor", IMAGE, "sleep", "1000"],
    );
    api.process().signal(nix::sys::signal::Signal::SIGKILL);
    drop(api);
    let api = Service::start(&berth);
    let ps = api.docker_ok(&berth, &["ps", "--format", "{{.Names}} {{.State}}"]);
    assert_eq!(ps.trim(), "survivor running");
    api.docker_ok(&berth, &["rm", "-f", "survivor"]);
}

#[test]
fn an_idle_service_exits_after_its_time() {
    if !have("docker") {
        skip("the docker CLI is not installed");
        return;
    }
    let Some(berth) = Berth::new() else { return };
    let api = Service::start_with(&berth, &["--time", "1"]);
    api.docker_ok(&berth, &["version"]);
    let socket = api.socket.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::os::unix::net::UnixStream::connect(&socket).is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "berth system service --time 1 still serves after a minute with no client"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = api.stop();
    assert!(out.status.success(), "the idle service exits 0: {out:?}");
}

#[test]
fn events_tell_a_container_s_life_whoever_drove_it() {
    let Some((berth, api)) = setup() else { return };
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    // Followed live: the end of a container, its status in the event.
    let mut follower = api.client(
        &berth,
        "docker",
        &[
            "events",
            "--filter",
            "event=die",
            "--format",
            "{{.Actor.Attributes.name}} {{.Actor.Attributes.exitCode}}",
        ],
    );
    follower
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut follower = follower.spawn().expect("docker events");
    std::thread::sleep(Duration::from_millis(500));
    // One through the API, one through the berth CLI (its monitor reports the end).
    let out = api.docker(
        &berth,
        &[
            "run", "--rm", "--name", "ev-api", "--label", "team=a", IMAGE, "sh", "-c", "exit 4",
        ],
    );
    assert_eq!(code(&out), 4);
    berth.run_ok(&["run", "-d", "--name", "ev-cli", IMAGE, "sh", "-c", "exit 3"]);
    assert_eq!(berth.run_ok(&["wait", "ev-cli"]).trim(), "3");
    let since = t0.to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let now = now.to_string();
    let history = |filter: &str| {
        api.docker_ok(
            &berth,
            &[
                "events",
                "--since",
                &since,
                "--until",
                &now,
                "--filter",
                filter,
                "--format",
                "{{.Type}} {{.Action}}{{with .Actor.Attributes.exitCode}} {{.}}{{end}}",
            ],
        )
    };
    assert_eq!(
        history("container=ev-api")
            .lines()
            .map(str::trim_end)
            .collect::<Vec<_>>(),
        [
            "container create",
            "container start",
            "container die 4",
            "container destroy"
        ]
    );
    assert_eq!(
        history("container=ev-cli")
            .lines()
            .map(str::trim_end)
            .collect::<Vec<_>>(),
        ["container create", "container start", "container die 3"]
    );
    // Labels are attributes, and filter.
    let labelled = history("label=team=a");
    assert_eq!(labelled.lines().count(), 4, "{labelled}");
    // The follower saw both ends as they happened.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = String::new();
    {
        use std::io::Read;
        let mut pipe = follower.stdout.take().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&pipe);
        // SAFETY: fcntl on a descriptor this test owns.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline && seen.lines().count() < 2 {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert_eq!(seen, "ev-api 4\nev-cli 3\n");
    berth.run_ok(&["rm", "ev-cli"]);
}

#[test]
fn socket_activation_serves_the_socket_systemd_passes() {
    if !have("docker") || !have("python3") {
        skip("the docker CLI or python3 is not installed");
        return;
    }
    let Some(berth) = Berth::new() else { return };
    let socket = berth.runtime_dir.join("activated.sock");
    // What systemd does for berth.socket: bind and listen, then start the service with the
    // socket as fd 3, LISTEN_FDS=1 and LISTEN_PID its own pid.
    let activate = format!(
        "import os, socket, sys\n\
         s = socket.socket(socket.AF_UNIX)\n\
         s.bind({path:?})\n\
         os.chmod({path:?}, 0o600)\n\
         s.listen(16)\n\
         os.dup2(s.fileno(), 3) if s.fileno() != 3 else None\n\
         os.set_inheritable(3, True)\n\
         os.environ['LISTEN_FDS'] = '1'\n\
         os.environ['LISTEN_PID'] = str(os.getpid())\n\
         os.execv(sys.argv[1], [sys.argv[1], 'system', 'service', '--time', '2'])\n",
        path = socket.display().to_string()
    );
    let mut cmd = berth
        .identity
        .command("python3", ["-c", &activate, common::berth_bin()]);
    cmd.env("BERTH_ROOT", &berth.root)
        .env("XDG_RUNTIME_DIR", &berth.runtime_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut service = cmd.spawn().expect("python3");
    let host = format!("unix://{}", socket.display());
    let deadline = Instant::now() + Duration::from_secs(30);
    let version = loop {
        let mut docker = berth
            .identity
            .command("docker", ["version", "--format", "{{.Server.Version}}"]);
        docker.env("DOCKER_HOST", &host);
        let out = docker.output().expect("docker version");
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the activated service never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    // Idle, it exits; the socket it was given is systemd's, and stays.
    let status = service
        .wait()
        .expect("the service exits after its idle time");
    assert!(status.success(), "{status}");
    assert!(
        socket.exists(),
        "an activated service leaves systemd's socket in place"
    );
}

/// Debian's docker.io 20.10 CLI, which speaks API 1.41 (scripts/setup-host installs it).
const DOCKER_20_10: &str = "/usr/bin/docker";

#[test]
fn an_older_docker_cli_speaking_api_1_41_drives_berth_too() {
    let Some((berth, api)) = setup() else { return };
    if !std::path::Path::new(DOCKER_20_10).exists() {
        skip("docker.io (the 20.10 CLI at /usr/bin/docker) is not installed: scripts/setup-host installs it");
        return;
    }
    let old = |args: &[&str]| {
        let out = common::finish(api.client(&berth, DOCKER_20_10, args), None, args);
        assert!(
            out.status.success(),
            "docker 20.10 {}",
            describe(args, &out)
        );
        stdout(&out)
    };
    assert_eq!(
        old(&[
            "version",
            "--format",
            "{{.Client.APIVersion}} {{.Server.APIVersion}}"
        ])
        .trim(),
        "1.41 1.47"
    );
    let args = [
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "echo out; echo err >&2; exit 2",
    ];
    let out = common::finish(api.client(&berth, DOCKER_20_10, &args), None, &args);
    assert_eq!(code(&out), 2, "{}", describe(&args, &out));
    assert_eq!(
        (stdout(&out), stderr(&out)),
        ("out\n".into(), "err\n".into())
    );
    old(&[
        "run",
        "-d",
        "--name",
        "old",
        "--label",
        "v=1.41",
        IMAGE,
        "sh",
        "-c",
        "echo up; sleep 1000",
    ]);
    assert_eq!(
        old(&[
            "ps",
            "--filter",
            "label=v=1.41",
            "--format",
            "{{.Names}} {{.State}}"
        ])
        .trim(),
        "old running"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !old(&["logs", "old"]).contains("up") {
        assert!(Instant::now() < deadline, "no output in docker logs");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        old(&["inspect", "-f", "{{.State.Running}}", "old"]).trim(),
        "true"
    );
    old(&["stop", "-t", "1", "old"]);
    assert_eq!(old(&["wait", "old"]).trim(), "137");
    old(&["rm", "old"]);
    assert_eq!(old(&["ps", "-a", "-q"]), "");
}
