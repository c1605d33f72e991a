//! `docker exec`, `docker cp` and `docker stats` against `berth system service`, with the
//! real docker CLI through the real socket, as the unprivileged test user.

mod common;

use std::time::Duration;

use common::api::{raw_request, Service};
use common::{code, describe, have, skip, stderr, stdout, Berth, IMAGE};

const WAIT: Duration = Duration::from_secs(30);

fn setup() -> Option<(Berth, Service)> {
    if !have("docker") {
        skip("the docker CLI is not installed: the API tests drive berth with it");
        return None;
    }
    let berth = Berth::new()?;
    let service = Service::start(&berth);
    Some((berth, service))
}

/// Removes container `name` and its processes (the fixture fails a test that leaves any).
fn remove(berth: &Berth, api: &Service, name: &str) {
    api.docker_ok(berth, &["rm", "-f", name]);
}

/// A running container named `name` that sleeps until stopped.
fn sleeper(berth: &Berth, api: &Service, name: &str) {
    api.docker_ok(berth, &["run", "-d", "--name", name, IMAGE, "sleep", "600"]);
}

#[test]
fn docker_exec_runs_with_output_status_env_workdir_and_user() {
    let Some((berth, api)) = setup() else { return };
    sleeper(&berth, &api, "ex");
    let args = [
        "exec",
        "-e",
        "GREETING=hello",
        "-w",
        "/tmp",
        "-u",
        "65534",
        "ex",
        "sh",
        "-c",
        "echo $GREETING in $(pwd) as $(id -u); echo on-stderr >&2; exit 7",
    ];
    let out = api.docker(&berth, &args);
    assert_eq!(code(&out), 7, "{}", describe(&args, &out));
    assert_eq!(
        stdout(&out),
        "hello in /tmp as 65534\n",
        "{}",
        describe(&args, &out)
    );
    assert_eq!(stderr(&out), "on-stderr\n", "{}", describe(&args, &out));
    // --privileged: every capability, more than the container's own.
    let caps = |extra: &[&str]| {
        let mut args = vec!["exec"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["ex", "sh", "-c", "grep CapEff /proc/self/status"]);
        let text = api.docker_ok(&berth, &args);
        let hex = text
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_string();
        u64::from_str_radix(&hex, 16).unwrap_or_else(|_| panic!("CapEff in {text:?}"))
    };
    let (plain, privileged) = (caps(&[]), caps(&["--privileged"]));
    assert_eq!(plain & privileged, plain, "{plain:x} within {privileged:x}");
    assert!(
        privileged.count_ones() > plain.count_ones() + 10,
        "{plain:x} vs {privileged:x}"
    );
    // A value shaped like a flag stays a value.
    let out = api.docker_ok(
        &berth,
        &["exec", "-e", "X=--detach", "ex", "sh", "-c", "echo $X"],
    );
    assert_eq!(out, "--detach\n");
    // A command that is not there: Docker's 127.
    let args = ["exec", "ex", "no-such-command"];
    let out = api.docker(&berth, &args);
    assert_eq!(code(&out), 127, "{}", describe(&args, &out));
    // A stopped container takes no exec.
    api.docker_ok(&berth, &["stop", "-t", "0", "ex"]);
    let args = ["exec", "ex", "true"];
    let out = api.docker(&berth, &args);
    assert_ne!(code(&out), 0, "{}", describe(&args, &out));
    assert!(
        stderr(&out).contains("is not running"),
        "{}",
        describe(&args, &out)
    );
    remove(&berth, &api, "ex");
}

#[test]
fn docker_exec_i_passes_stdin_and_its_end() {
    let Some((berth, api)) = setup() else { return };
    sleeper(&berth, &api, "exi");
    let args = ["exec", "-i", "exi", "sh", "-c", "tr a-z A-Z; echo eof-seen"];
    let out = api.docker_with_stdin(&berth, &args, b"line one\nline two\n");
    assert_eq!(code(&out), 0, "{}", describe(&args, &out));
    assert_eq!(
        stdout(&out),
        "LINE ONE\nLINE TWO\neof-seen\n",
        "{}",
        describe(&args, &out)
    );
    remove(&berth, &api, "exi");
}

#[test]
fn docker_exec_it_in_a_terminal_follows_its_size_and_returns_the_status() {
    let Some((berth, api)) = setup() else { return };
    sleeper(&berth, &api, "ext");
    let mut session = api.docker_pty(&berth, &["exec", "-it", "ext", "sh"], 31, 97);
    session.write("stty size; tty\r");
    session.expect("31 97", WAIT);
    session.expect("/dev/pts/", WAIT);
    session.resize(40, 120);
    // The CLI sends the new size on SIGWINCH; a moment for it to arrive.
    std::thread::sleep(Duration::from_millis(500));
    session.write("stty size\r");
    session.expect("40 120", WAIT);
    session.write("echo $((6 * 7))-answer\r");
    session.expect("42-answer", WAIT);
    session.write("exit 5\r");
    let (status, output) = session.wait(WAIT);
    assert_eq!(status.code(), Some(5), "docker exec -it:\n{output}");
    remove(&berth, &api, "ext");
}

#[test]
fn docker_exec_it_detaches_on_ctrl_p_ctrl_q_and_the_process_runs_on() {
    let Some((berth, api)) = setup() else { return };
    sleeper(&berth, &api, "exk");
    let mut session = api.docker_pty(&berth, &["exec", "-it", "exk", "sh"], 24, 80);
    session.write("echo ready-$((1 + 1))\r");
    session.expect("ready-2", WAIT);
    session.write("sleep 61\r");
    std::thread::sleep(Duration::from_millis(300));
    session.write("\x10\x11");
    // The CLI ends as it does with Docker's daemon.
    let (_, output) = session.wait(WAIT);
    assert!(
        output.contains("read escape sequence"),
        "docker exec -it detached:\n{output}"
    );
    let procs = api.docker_ok(
        &berth,
        &[
            "exec",
            "exk",
            "sh",
            "-c",
            "cat /proc/[0-9]*/cmdline | tr '\\0' ' '",
        ],
    );
    assert!(
        procs.contains("sleep 61"),
        "the exec'd shell runs on: {procs}"
    );
    remove(&berth, &api, "exk");
}

#[test]
fn docker_exec_d_leaves_the_process_running() {
    let Some((berth, api)) = setup() else { return };
    sleeper(&berth, &api, "exd");
    let out = api.docker_ok(
        &berth,
        &[
            "exec",
            "-d",
            "exd",
            "sh",
            "-c",
            "sleep 3; echo done > /tmp/marker",
        ],
    );
    assert_eq!(out, "");
    // The call returned before the process ended; it goes on to write its file.
    let probe = ["exec", "exd", "cat", "/tmp/marker"];
    let first = api.docker(&berth, &probe);
    assert_ne!(code(&first), 0, "the marker is there too early");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let out = api.docker(&berth, &probe);
        if code(&out) == 0 {
            assert_eq!(stdout(&out), "done\n");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            describe(&probe, &out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    remove(&berth, &api, "exd");
}

#[test]
fn docker_stats_no_stream_prints_real_figures() {
    let Some((berth, api)) = setup() else { return };
    api.docker_ok(
        &berth,
        &[
            "run",
            "-d",
            "--name",
            "busy",
            IMAGE,
            "sh",
            "-c",
            "while :; do :; done",
        ],
    );
    let args = [
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}}|{{.CPUPerc}}|{{.MemUsage}}|{{.PIDs}}",
        "busy",
    ];
    let out = api.docker(&berth, &args);
    assert_eq!(code(&out), 0, "{}", describe(&args, &out));
    let text = stdout(&out);
    let fields: Vec<&str> = text.trim().split('|').collect();
    assert_eq!(fields.len(), 4, "{text}");
    assert_eq!(fields[0], "busy");
    // A shell spinning takes a CPU's share (less on a machine busy with other work).
    let cpu: f64 = fields[1].trim_end_matches('%').parse().unwrap_or(0.0);
    assert!(cpu > 5.0, "CPU of a busy loop: {text}");
    // Some memory, out of the host's.
    let (used, limit) = fields[2].split_once(" / ").expect("USAGE / LIMIT");
    assert!(!used.starts_with("0B"), "memory used: {text}");
    assert!(limit.ends_with("GiB") || limit.ends_with("MiB"), "{text}");
    assert!(fields[3].parse::<u32>().unwrap_or(0) >= 1, "pids: {text}");
    remove(&berth, &api, "busy");
}

#[test]
fn docker_cp_copies_files_and_directories_both_ways() {
    let Some((berth, api)) = setup() else { return };
    sleeper(&berth, &api, "cpr");
    let dir = berth.host_mkdir("cp");
    std::fs::write(dir.join("note.txt"), "a note\n").unwrap();
    std::fs::create_dir_all(dir.join("tree/sub")).unwrap();
    std::fs::write(dir.join("tree/sub/leaf"), "leaf\n").unwrap();
    for p in ["note.txt", "tree", "tree/sub", "tree/sub/leaf"] {
        berth.give(&dir.join(p));
    }
    let host = |p: &str| dir.join(p).to_string_lossy().into_owned();
    // Into the container: a file into a directory, a directory to a new name.
    api.docker_ok(&berth, &["cp", &host("note.txt"), "cpr:/tmp/"]);
    api.docker_ok(&berth, &["cp", &host("tree"), "cpr:/tmp/copied"]);
    let seen = api.docker_ok(
        &berth,
        &[
            "exec",
            "cpr",
            "sh",
            "-c",
            "cat /tmp/note.txt /tmp/copied/sub/leaf",
        ],
    );
    assert_eq!(seen, "a note\nleaf\n");
    // Out of it: a file to a new name, a directory into an existing one.
    api.docker_ok(
        &berth,
        &[
            "exec",
            "cpr",
            "sh",
            "-c",
            "mkdir -p /data/in && echo inside > /data/in/f",
        ],
    );
    api.docker_ok(&berth, &["cp", "cpr:/data/in/f", &host("out.txt")]);
    assert_eq!(
        std::fs::read_to_string(dir.join("out.txt")).unwrap(),
        "inside\n"
    );
    api.docker_ok(&berth, &["cp", "cpr:/data", &host("tree")]);
    assert_eq!(
        std::fs::read_to_string(dir.join("tree/data/in/f")).unwrap(),
        "inside\n"
    );
    // `DIR/.`: the directory's contents, both ways.
    api.docker_ok(&berth, &["cp", "cpr:/data/in/.", &host("contents")]);
    assert_eq!(
        std::fs::read_to_string(dir.join("contents/f")).unwrap(),
        "inside\n"
    );
    api.docker_ok(&berth, &["cp", &host("tree/sub/."), "cpr:/data/in"]);
    let seen = api.docker_ok(&berth, &["exec", "cpr", "cat", "/data/in/leaf"]);
    assert_eq!(seen, "leaf\n");
    // A path that is not there: Docker's message, nothing made.
    let args = ["cp", "cpr:/no/such", &host("none")];
    let out = api.docker(&berth, &args);
    assert_ne!(code(&out), 0, "{}", describe(&args, &out));
    assert!(
        stderr(&out).contains("Could not find the file"),
        "{}",
        describe(&args, &out)
    );
    assert!(!dir.join("none").exists());
    // A file does not replace a directory (the CLI asks noOverwriteDirNonDir).
    api.docker_ok(&berth, &["exec", "cpr", "mkdir", "/tmp/clash"]);
    std::fs::write(dir.join("clash"), "a file\n").unwrap();
    berth.give(&dir.join("clash"));
    let args = ["cp", &host("clash"), "cpr:/tmp/"];
    let out = api.docker(&berth, &args);
    assert_ne!(code(&out), 0, "{}", describe(&args, &out));
    assert!(
        stderr(&out).contains("cannot overwrite directory"),
        "{}",
        describe(&args, &out)
    );
    api.docker_ok(&berth, &["exec", "cpr", "test", "-d", "/tmp/clash"]);
    remove(&berth, &api, "cpr");
}

#[test]
fn docker_cp_works_on_a_stopped_container() {
    let Some((berth, api)) = setup() else { return };
    api.docker_ok(
        &berth,
        &["create", "--name", "cps", IMAGE, "cat", "/root/given"],
    );
    let dir = berth.host_mkdir("cps");
    std::fs::write(dir.join("given"), "given while stopped\n").unwrap();
    berth.give(&dir.join("given"));
    let host = |p: &str| dir.join(p).to_string_lossy().into_owned();
    api.docker_ok(&berth, &["cp", &host("given"), "cps:/root/given"]);
    api.docker_ok(&berth, &["cp", "cps:/root/given", &host("back")]);
    assert_eq!(
        std::fs::read_to_string(dir.join("back")).unwrap(),
        "given while stopped\n"
    );
    // The container finds it when it runs.
    let out = api.docker_ok(&berth, &["start", "-a", "cps"]);
    assert_eq!(out, "given while stopped\n");
    remove(&berth, &api, "cps");
}

#[test]
fn docker_cp_keeps_hostile_paths_inside_the_container() {
    let Some((berth, api)) = setup() else { return };
    sleeper(&berth, &api, "cph");
    let dir = berth.host_mkdir("cph");
    std::fs::write(dir.join("planted"), "planted\n").unwrap();
    berth.give(&dir.join("planted"));
    let host = |p: &str| dir.join(p).to_string_lossy().into_owned();
    // `..` past the container's root is its root: this lands in the container's /etc.
    api.docker_ok(&berth, &["cp", &host("planted"), "cph:../../etc/"]);
    let seen = api.docker_ok(&berth, &["exec", "cph", "cat", "/etc/planted"]);
    assert_eq!(seen, "planted\n");
    assert!(!std::path::Path::new("/etc/planted").exists());
    // Out of the container too: its /etc/hostname, not the host's.
    api.docker_ok(&berth, &["cp", "cph:../../../etc/planted", &host("back")]);
    assert_eq!(
        std::fs::read_to_string(dir.join("back")).unwrap(),
        "planted\n"
    );
    // A client's archive with `..` entries and a symlink out of the destination writes
    // nothing outside it.
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    tar.append_link(&mut h, "link", "/etc").unwrap();
    for name in ["link/escaped", "../../escaped"] {
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        // set_path refuses `..`: write the name into the header as a hostile client does.
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_cksum();
        tar.append(&h, &b"evil"[..]).unwrap();
    }
    let archive = tar.into_inner().unwrap();
    let args = ["cp", "-", "cph:/tmp"];
    let out = api.docker_with_stdin(&berth, &args, &archive);
    assert_ne!(
        code(&out),
        0,
        "a hostile archive is refused: {}",
        describe(&args, &out)
    );
    let probe = api.docker(
        &berth,
        &[
            "exec",
            "cph",
            "sh",
            "-c",
            "ls /etc/escaped /escaped /tmp/escaped 2>/dev/null",
        ],
    );
    assert_eq!(stdout(&probe), "", "nothing escaped the destination");
    remove(&berth, &api, "cph");
}

#[test]
fn an_exec_instance_reports_its_run_over_the_api() {
    let Some((berth, api)) = setup() else { return };
    sleeper(&berth, &api, "exj");
    let post = |path: &str, body: &str| {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: berth\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        raw_request(&api.socket, req.as_bytes())
    };
    let get = |path: &str| {
        let req = format!("GET {path} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n");
        raw_request(&api.socket, req.as_bytes())
    };
    let (status, body) = post(
        "/v1.47/containers/exj/exec",
        r#"{"Cmd":["sh","-c","sleep 1; exit 3"],"AttachStdin":true,"User":"65534"}"#,
    );
    assert!(status.contains("201"), "{status}: {body}");
    let created: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = created["Id"].as_str().unwrap().to_string();
    let (status, body) = post(&format!("/v1.47/exec/{id}/start"), r#"{"Detach":true}"#);
    assert!(status.contains("200"), "{status}: {body}");
    let inspect = |id: &str| {
        let (status, body) = get(&format!("/v1.47/exec/{id}/json"));
        assert!(status.contains("200"), "{status}: {body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let first = inspect(&id);
    assert_eq!(first["Running"], true, "{first}");
    assert_eq!(first["OpenStdin"], true, "{first}");
    assert_eq!(first["ProcessConfig"]["entrypoint"], "sh", "{first}");
    assert_eq!(first["ProcessConfig"]["user"], "65534", "{first}");
    assert!(first["Pid"].as_i64().unwrap_or(0) > 0, "{first}");
    assert!(
        first["ContainerID"].as_str().unwrap_or_default().len() == 64,
        "{first}"
    );
    let deadline = std::time::Instant::now() + WAIT;
    let done = loop {
        let now = inspect(&id);
        if now["Running"] == false {
            break now;
        }
        assert!(std::time::Instant::now() < deadline, "{now}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(done["ExitCode"], 3, "{done}");
    // Started once only; an unknown id is a 404; no terminal, nothing to resize.
    let (status, _) = post(&format!("/v1.47/exec/{id}/start"), r#"{"Detach":true}"#);
    assert!(status.contains("409"), "{status}");
    let (status, _) = get("/v1.47/exec/no-such-exec/json");
    assert!(status.contains("404"), "{status}");
    let (status, _) = post(&format!("/v1.47/exec/{id}/resize?h=10&w=10"), "");
    assert!(status.contains("409"), "{status}");
    // Bad input is a 400 and the service serves on.
    let (status, _) = post("/v1.47/containers/exj/exec", r#"{"Cmd":[]}"#);
    assert!(status.contains("400"), "{status}");
    let (status, _) = post(
        "/v1.47/containers/exj/exec",
        r#"{"Cmd":["true"],"DetachKeys":"alt-q"}"#,
    );
    assert!(status.contains("400"), "{status}");
    remove(&berth, &api, "exj");
}
