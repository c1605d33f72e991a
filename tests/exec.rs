//! `berth exec`, `berth top`, `berth stats` on running containers, through the real binary
//! as the unprivileged test user: the new process is in the container (its namespaces, root,
//! capabilities, seccomp filter, no_new_privs), with `-u`, `-e`, `-w`, `-i`, `-t`, `-d`,
//! and the exit status as `run` gives it.

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;

use common::{assert_exit, describe, status_field, stderr, stdout, Berth, IMAGE};

const WAIT: Duration = Duration::from_secs(60);
const SERVER: &str = "echo ready; while :; do sleep 0.1; done";

fn start_server(berth: &Berth, name: &str, extra: &[&str]) {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[IMAGE, "sh", "-c", SERVER]);
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 0);
}

fn exec_ok(berth: &Berth, args: &[&str]) -> String {
    let mut full = vec!["exec"];
    full.extend_from_slice(args);
    let out = berth.cmd(&full);
    assert_exit(&full, &out, 0);
    stdout(&out)
}

#[test]
fn exec_runs_inside_the_container() {
    let Some(berth) = Berth::new() else { return };
    start_server(
        &berth,
        "box",
        &[
            "--hostname",
            "boxhost",
            "--network",
            "none",
            "-e",
            "BASE=from-run",
        ],
    );
    assert_eq!(exec_ok(&berth, &["box", "hostname"]).trim(), "boxhost");
    // The container's pid namespace: its first process is PID 1 there.
    let one = exec_ok(&berth, &["box", "cat", "/proc/1/cmdline"]);
    assert!(
        one.contains("sleep 0.1"),
        "PID 1 is the container's sh: {one:?}"
    );
    // Its root: the image's files, with the second layer's whiteout applied.
    let ls = exec_ok(&berth, &["box", "ls", "/data"]);
    assert!(ls.contains("added") && !ls.contains("remove-me"), "{ls}");
    // Its mount namespace: what exec writes, the container sees.
    exec_ok(&berth, &["box", "sh", "-c", "echo shared > /tmp/x"]);
    assert_eq!(exec_ok(&berth, &["box", "cat", "/tmp/x"]), "shared\n");
    // Its network namespace: only lo.
    let ifaces = exec_ok(&berth, &["box", "ls", "/sys/class/net"]);
    assert_eq!(ifaces.trim(), "lo");
    // The container's environment, with -e on top.
    let env = exec_ok(&berth, &["-e", "EXTRA=1", "box", "env"]);
    assert!(
        env.contains("BASE=from-run") && env.contains("EXTRA=1"),
        "{env}"
    );
    assert_eq!(exec_ok(&berth, &["-w", "/data", "box", "pwd"]), "/data\n");
    berth.run_ok(&["rm", "-f", "box"]);
}

#[test]
fn exec_gets_the_containers_privileges_and_no_more() {
    let Some(berth) = Berth::new() else { return };
    start_server(&berth, "sec", &["--cap-drop", "NET_RAW"]);
    let init = exec_ok(&berth, &["sec", "cat", "/proc/1/status"]);
    let own = exec_ok(&berth, &["sec", "cat", "/proc/self/status"]);
    for key in ["CapEff", "CapPrm", "CapBnd", "NoNewPrivs", "Seccomp"] {
        assert_eq!(
            status_field(&own, key),
            status_field(&init, key),
            "{key} of an exec'd process is the container's:\n{own}"
        );
    }
    assert_eq!(status_field(&own, "NoNewPrivs").as_deref(), Some("1"));
    assert_eq!(
        status_field(&own, "Seccomp").as_deref(),
        Some("2"),
        "filtered"
    );
    // The seccomp filter applies: Docker's profile refuses unshare of a user namespace.
    let args = ["exec", "sec", "unshare", "-U", "true"];
    let out = berth.cmd(&args);
    assert_ne!(common::code(&out), 0, "{}", describe(&args, &out));
    berth.run_ok(&["rm", "-f", "sec"]);
}

#[test]
fn exec_users_and_exit_statuses() {
    let Some(berth) = Berth::new() else { return };
    start_server(&berth, "who", &[]);
    assert_eq!(exec_ok(&berth, &["who", "id", "-u"]).trim(), "0");
    // -u resolves as `run -u` does, from the container's /etc/passwd and /etc/group.
    let as_run = berth.container_ok(&["-u", "user", IMAGE, "id"]);
    assert!(
        as_run.starts_with("uid=1000(user) gid=1000(user)"),
        "{as_run}"
    );
    assert_eq!(exec_ok(&berth, &["-u", "user", "who", "id"]), as_run);
    assert_eq!(
        exec_ok(&berth, &["-u", "1000:50", "who", "id", "-g"]).trim(),
        "50"
    );
    let args = ["exec", "-u", "nosuchuser", "who", "true"];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 125);
    assert!(
        stderr(&out).contains("nosuchuser"),
        "{}",
        describe(&args, &out)
    );

    let args = ["exec", "who", "sh", "-c", "exit 9"];
    assert_exit(&args, &berth.cmd(&args), 9);
    let args = ["exec", "who", "no-such-command"];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 127);
    assert!(
        stderr(&out).contains("no-such-command"),
        "{}",
        describe(&args, &out)
    );
    let args = ["exec", "who", "/etc/passwd"];
    assert_exit(&args, &berth.cmd(&args), 126);
    let args = ["exec", "who", "sh", "-c", "kill -TERM $$"];
    assert_exit(&args, &berth.cmd(&args), 143);
    berth.run_ok(&["stop", "-t", "0", "who"]);
    let args = ["exec", "who", "true"];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 125);
    assert!(
        stderr(&out).contains("not running"),
        "{}",
        describe(&args, &out)
    );
    berth.run_ok(&["rm", "who"]);
}

#[test]
fn exec_stdin_terminal_and_detached() {
    let Some(berth) = Berth::new() else { return };
    start_server(&berth, "io", &[]);
    let args = ["exec", "-i", "io", "sh", "-c", "cat; echo done"];
    let out = berth.cmd_with_stdin(&args, b"piped in\n");
    assert_exit(&args, &out, 0);
    assert_eq!(stdout(&out), "piped in\ndone\n");

    let session = berth.spawn_pty(
        &[
            "exec",
            "-it",
            "io",
            "sh",
            "-c",
            "tty; stty size; test -t 0 && echo is-tty",
        ],
        33,
        91,
    );
    let (status, output) = session.wait(WAIT);
    assert!(status.success(), "{status:?}\n{output}");
    assert!(output.contains("/dev/pts/"), "{output}");
    assert!(output.contains("33 91"), "the terminal's size: {output}");
    assert!(output.contains("is-tty"), "{output}");

    let out = exec_ok(
        &berth,
        &["-d", "io", "sh", "-c", "sleep 0.2; echo later > /tmp/d"],
    );
    assert_eq!(out, "", "exec -d prints nothing");
    let deadline = Instant::now() + WAIT;
    loop {
        let out = berth.cmd(&["exec", "io", "cat", "/tmp/d"]);
        if stdout(&out) == "later\n" {
            break;
        }
        assert!(Instant::now() < deadline, "the detached process ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    berth.run_ok(&["rm", "-f", "io"]);
}

#[test]
fn exec_into_a_foreground_run() {
    let Some(berth) = Berth::new() else { return };
    let mut fg = berth.spawn(&["run", "--rm", "--name", "fg", IMAGE, "sh", "-c", SERVER]);
    fg.wait_for_line("ready", WAIT);
    assert_eq!(exec_ok(&berth, &["fg", "echo", "hi"]), "hi\n");
    berth.run_ok(&["stop", "-t", "1", "fg"]);
    let out = fg.wait(WAIT);
    assert_eq!(
        common::code(&out),
        137,
        "stop ends a foreground run too: {out:?}"
    );
}

#[test]
fn top_lists_the_containers_processes() {
    let Some(berth) = Berth::new() else { return };
    start_server(&berth, "procs", &[]);
    let top = berth.run_ok(&["top", "procs"]);
    let header = top.lines().next().unwrap();
    assert!(header.contains("PID") && header.contains("CMD"), "{top}");
    assert!(top.contains("sh -c"), "the container's sh: {top}");
    assert!(
        !top.contains("berth-monitor"),
        "only the container's processes: {top}"
    );
    let custom = berth.run_ok(&["top", "procs", "-eo", "pid,comm"]);
    assert!(
        custom.starts_with("    PID") || custom.contains("PID COMMAND"),
        "{custom}"
    );
    assert!(custom.contains(" sh"), "{custom}");
    assert!(
        !custom.contains("berth") && !custom.contains("cargo"),
        "host processes are cut away: {custom}"
    );
    berth.run_ok(&["rm", "-f", "procs"]);
}

#[test]
fn stats_reports_what_the_host_allows() {
    let Some(berth) = Berth::new() else { return };
    start_server(&berth, "load", &["--network", "none"]);
    let table = berth.run_ok(&["stats", "--no-stream", "load"]);
    assert!(table.contains("load") && table.contains("CPU %"), "{table}");
    assert!(
        table.contains("note:") && table.contains("PSS") && table.contains("cgroup"),
        "says what the memory figure is and why there is no limit: {table}"
    );
    let json = berth.run_ok(&["stats", "--no-stream", "--format", "json"]);
    let v: Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(v["name"], "load");
    assert!(v["pids"].as_u64().unwrap() >= 2, "sh and its sleep: {v}");
    assert!(v["memory_pss"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["net_rx"], 0, "--network none: no traffic beyond lo");
    berth.run_ok(&["rm", "-f", "load"]);
}
