//! The Docker tools people use, driving `berth system service` through its socket as the
//! unprivileged test user: docker-py and testcontainers-python (PyPI, in the venv
//! scripts/setup-host makes), and Debian's docker-compose 1.29 (Compose v1, on docker-py).

mod common;

use std::path::{Path, PathBuf};

use common::api::Service;
use common::{describe, finish, have, skip, stdout, Berth, IMAGE};

/// The venv scripts/setup-host fills with docker-py and testcontainers.
const CLIENTS_PYTHON: &str = "/opt/berth-test-clients/bin/python";

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

/// Runs a client script as the fixture's user against its service; it prints `all ok` last.
fn run_python(name: &str, env: &[(&str, &str)]) {
    if !Path::new(CLIENTS_PYTHON).exists() {
        skip(&format!(
            "{CLIENTS_PYTHON} is missing: scripts/setup-host makes it (docker-py and testcontainers from PyPI)"
        ));
        return;
    }
    let Some(berth) = Berth::new() else { return };
    let api = Service::start(&berth);
    let path = script(name);
    let path = path.to_string_lossy();
    let mut cmd = api.client(&berth, CLIENTS_PYTHON, &[&path]);
    cmd.env("IMAGE", IMAGE);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let args = [CLIENTS_PYTHON, &path];
    let out = finish(cmd, None, &args);
    assert!(
        out.status.success() && stdout(&out).ends_with("all ok\n"),
        "{}",
        describe(&args, &out)
    );
}

#[test]
fn docker_py_runs_waits_logs_attaches_and_reads_events() {
    run_python("docker_py.py", &[]);
}

#[test]
fn testcontainers_waits_for_a_log_line_and_reaches_the_exposed_port() {
    // Ryuk, testcontainers' reaper, is an image from Docker Hub; the test removes its
    // container itself (the `with` block), and the harness checks nothing is left.
    // This machine has a /.dockerenv (it is a container itself), which makes testcontainers
    // look for the host at a container gateway; the service is local: the connection mode says so.
    run_python(
        "testcontainers_py.py",
        &[
            ("TESTCONTAINERS_RYUK_DISABLED", "true"),
            ("TESTCONTAINERS_CONNECTION_MODE", "docker_host"),
        ],
    );
}

#[test]
fn compose_v1_brings_a_two_service_app_up_and_down() {
    if !have("docker-compose") {
        skip("docker-compose (Compose v1) is not installed: scripts/setup-host installs it");
        return;
    }
    let Some(berth) = Berth::new() else { return };
    let api = Service::start(&berth);
    let project = berth.host_mkdir("app");
    let file = project.join("docker-compose.yml");
    std::fs::write(
        &file,
        format!(
            r#"version: "3.8"
services:
  web:
    image: {IMAGE}
    command: ["sh", "-c", "echo web-up; while :; do nc -l -p 8080 -e echo from-web; done"]
    volumes: ["data:/data"]
  client:
    image: {IMAGE}
    depends_on: [web]
    command: ["sh", "-c", "for i in $$(seq 50); do r=$$(nc web 8080 </dev/null) && [ -n \"$$r\" ] && break; sleep 0.2; done; echo client-got=$$r; sleep 1000"]
volumes:
  data: {{}}
"#
        ),
    )
    .unwrap();
    berth.give(&file);
    let compose = |args: &[&str]| {
        let mut full = vec!["-p", "shop", "-f", "docker-compose.yml"];
        full.extend_from_slice(args);
        let mut cmd = api.client(&berth, "docker-compose", &full);
        cmd.current_dir(&project);
        let out = finish(cmd, None, &full);
        assert!(
            out.status.success(),
            "docker-compose {}",
            describe(&full, &out)
        );
        stdout(&out)
    };
    compose(&["up", "-d"]);
    let ps = compose(&["ps"]);
    assert!(
        ps.contains("shop_web_1") && ps.contains("shop_client_1") && ps.matches("Up").count() == 2,
        "docker-compose ps: {ps}"
    );
    // The client found the web service by its name on the project's network.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let logs = compose(&["logs", "--no-color"]);
        if logs.contains("client-got=from-web") && logs.contains("web-up") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "docker-compose logs never showed the client reaching web: {logs}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    compose(&["down", "-v"]);
    assert_eq!(api.docker_ok(&berth, &["ps", "-a", "-q"]), "");
    let volumes = api.docker_ok(&berth, &["volume", "ls", "-q"]);
    assert!(
        !volumes.contains("shop_data"),
        "down -v removes the volume: {volumes}"
    );
    let networks = api.docker_ok(&berth, &["network", "ls", "--format", "{{.Name}}"]);
    assert!(
        !networks.contains("shop_default"),
        "down removes the network: {networks}"
    );
}
