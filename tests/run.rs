//! `berth run`: exit codes, signals, stdio, and every flag that shapes the
//! process (env, cwd, user, entrypoint, hostname, name, volumes, tmpfs,
//! read-only rootfs, init), through the real binary and a real container.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use nix::sys::signal::Signal;

use common::{assert_exit, code, describe, lines, stderr, stdout, Berth, CONFIG_IMAGE, IMAGE};

const WAIT: Duration = Duration::from_secs(30);

// --- exit status and signals ----------------------------------------------

#[test]
fn exit_status_is_the_containers() {
    let Some(berth) = Berth::new() else { return };
    for (script, expected) in [
        ("exit 0", 0),
        ("exit 7", 7),
        ("exit 255", 255),
        ("false", 1),
    ] {
        let args = ["run", "--rm", IMAGE, "sh", "-c", script];
        assert_exit(&args, &berth.cmd(&args), expected);
    }
}

/// PID 1 of a pid namespace ignores signals it has no handler for, even
/// its own SIGKILL; behind --init the command is an ordinary process.
#[test]
fn death_by_signal_gives_128_plus_n() {
    let Some(berth) = Berth::new() else { return };
    let args = ["run", "--rm", "--init", IMAGE, "sh", "-c", "kill -9 $$"];
    assert_exit(&args, &berth.cmd(&args), 137);
    let args = ["run", "--rm", "--init", IMAGE, "sh", "-c", "kill -USR1 $$"];
    assert_exit(&args, &berth.cmd(&args), 138);
}

/// The container's PID 1 killed from the host (OOM killer, `kill -9`).
#[test]
fn sigkill_from_outside_gives_137() {
    let Some(berth) = Berth::new() else { return };
    let script = "echo ready; while :; do sleep 0.1; done # kill-me-from-outside";
    let args = ["run", "--rm", IMAGE, "sh", "-c", script];
    let mut running = berth.spawn(&args);
    running.wait_for_line("ready", WAIT);
    let found = common::procs::processes(|_, _, _| true)
        .into_iter()
        .filter(|p| p.cmdline.starts_with("sh -c") && p.cmdline.contains("kill-me-from-outside"))
        .collect::<Vec<_>>();
    // The loop's fork for `sleep` carries the same command line until it execs: the
    // container's sh is the one whose parent is not one of them.
    let parent = |pid: i32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        after
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<i32>().ok())
    };
    let pids: Vec<i32> = found.iter().map(|p| p.pid).collect();
    let targets = found
        .into_iter()
        .filter(|p| parent(p.pid).is_none_or(|pp| !pids.contains(&pp)))
        .collect::<Vec<_>>();
    assert_eq!(
        targets.len(),
        1,
        "the container's sh on the host: {targets:?}"
    );
    common::procs::kill_all(&targets);
    assert_exit(&args, &running.wait(WAIT), 137);
}

#[test]
fn unknown_command_gives_127_and_says_so() {
    let Some(berth) = Berth::new() else { return };
    let args = ["run", "--rm", IMAGE, "no-such-command"];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 127);
    assert!(
        stderr(&out).contains("no-such-command"),
        "{}",
        describe(&args, &out)
    );
}

#[test]
fn stdout_and_stderr_stay_apart() {
    let Some(berth) = Berth::new() else { return };
    let args = [
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "echo to-out; echo to-err >&2; echo more-out",
    ];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 0);
    assert_eq!(
        stdout(&out),
        "to-out\nmore-out\n",
        "{}",
        describe(&args, &out)
    );
    assert!(stderr(&out).contains("to-err"), "{}", describe(&args, &out));
    assert!(
        !stdout(&out).contains("to-err"),
        "{}",
        describe(&args, &out)
    );
}

fn signal_reaches_the_container(extra: &[&str], signal: Signal, trap: &str) {
    let Some(berth) = Berth::new() else { return };
    let script =
        format!("trap 'echo got-{trap}; exit 3' {trap}; echo ready; while :; do sleep 0.1; done");
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[IMAGE, "sh", "-c", &script]);
    let mut running = berth.spawn(&args);
    running.wait_for_line("ready", WAIT);
    running.signal(signal);
    let out = running.wait(WAIT);
    assert!(
        stdout(&out).contains(&format!("got-{trap}")),
        "{}",
        describe(&args, &out)
    );
    assert_exit(&args, &out, 3);
}

#[test]
fn sigterm_to_berth_reaches_the_container() {
    signal_reaches_the_container(&[], Signal::SIGTERM, "TERM");
}

#[test]
fn sigint_to_berth_reaches_the_container() {
    signal_reaches_the_container(&[], Signal::SIGINT, "INT");
}

#[test]
fn sigterm_reaches_the_container_through_init() {
    signal_reaches_the_container(&["--init"], Signal::SIGTERM, "TERM");
}

// --- stdin -------------------------------------------------------------------

#[test]
fn stdin_with_i_reaches_the_container_and_so_does_eof() {
    let Some(berth) = Berth::new() else { return };
    let args = ["run", "--rm", "-i", IMAGE, "cat"];
    let out = berth.cmd_with_stdin(&args, b"hi\nthere\n");
    assert_exit(&args, &out, 0);
    assert_eq!(stdout(&out), "hi\nthere\n", "{}", describe(&args, &out));

    let args = ["run", "--rm", "-i", IMAGE, "wc", "-l"];
    let out = berth.cmd_with_stdin(&args, b"1\n2\n3\n");
    assert_eq!(stdout(&out).trim(), "3", "{}", describe(&args, &out));
}

#[test]
fn without_i_stdin_is_empty() {
    let Some(berth) = Berth::new() else { return };
    let args = ["run", "--rm", IMAGE, "cat"];
    let out = berth.cmd_with_stdin(&args, b"not for the container\n");
    assert_exit(&args, &out, 0);
    assert_eq!(stdout(&out), "", "{}", describe(&args, &out));
}

// --- environment ---------------------------------------------------------------

fn env_of(berth: &Berth, args: &[&str]) -> Vec<String> {
    let mut full = args.to_vec();
    full.push("env");
    lines(&berth.container_ok(&full))
}

#[test]
fn image_env_and_e_flags() {
    let Some(berth) = Berth::new() else { return };
    let env = env_of(&berth, &[IMAGE]);
    assert!(env.contains(&"IMAGE_VAR=from-image".to_string()), "{env:?}");
    assert!(
        env.iter()
            .any(|e| e.starts_with("PATH=") && e.contains("/bin")),
        "{env:?}"
    );
    assert!(
        env.contains(&"HOME=/root".to_string()),
        "HOME comes from /etc/passwd: {env:?}"
    );

    let env = env_of(
        &berth,
        &[
            "-e",
            "FOO=bar",
            "-e",
            "IMAGE_VAR=overridden",
            "-e",
            "EMPTY=",
            IMAGE,
        ],
    );
    assert!(env.contains(&"FOO=bar".to_string()), "{env:?}");
    assert!(
        env.contains(&"IMAGE_VAR=overridden".to_string()),
        "-e overrides the image: {env:?}"
    );
    assert!(env.contains(&"EMPTY=".to_string()), "{env:?}");
    assert!(
        !env.iter().any(|e| e.starts_with("BERTH_ROOT=")),
        "berth's own environment leaks in: {env:?}"
    );
}

#[test]
fn e_without_value_takes_berths_environment() {
    let Some(berth) = Berth::new() else { return };
    let mut cmd = berth.command(&[
        "run",
        "--rm",
        "-e",
        "FROM_HOST",
        "-e",
        "UNSET_ON_HOST",
        IMAGE,
        "env",
    ]);
    cmd.env("FROM_HOST", "host-value");
    let out = cmd.output().expect("berth run");
    assert!(
        out.status.success(),
        "{}",
        describe(&["run", "-e", "FROM_HOST"], &out)
    );
    let env = lines(&stdout(&out));
    assert!(env.contains(&"FROM_HOST=host-value".to_string()), "{env:?}");
    assert!(
        !env.iter().any(|e| e.starts_with("UNSET_ON_HOST")),
        "Docker drops -e NAME when NAME is unset: {env:?}"
    );
}

#[test]
fn env_file() {
    let Some(berth) = Berth::new() else { return };
    let file = berth.host_file(
        "vars.env",
        "# a comment\n\nFROM_FILE=one\nWITH_SPACES=a b c\nIMAGE_VAR=from-file\n",
    );
    let file = file.to_str().unwrap_or_default();
    let env = env_of(&berth, &["--env-file", file, IMAGE]);
    for want in ["FROM_FILE=one", "WITH_SPACES=a b c", "IMAGE_VAR=from-file"] {
        assert!(env.contains(&want.to_string()), "{want} missing: {env:?}");
    }
    let env = env_of(
        &berth,
        &["--env-file", file, "-e", "FROM_FILE=flag-wins", IMAGE],
    );
    assert!(
        env.contains(&"FROM_FILE=flag-wins".to_string()),
        "-e beats --env-file: {env:?}"
    );
}

// --- working directory ------------------------------------------------------------

#[test]
fn workdir_flag_and_image_workdir() {
    let Some(berth) = Berth::new() else { return };
    berth.load_config_image();
    assert_eq!(berth.container_ok(&[IMAGE, "pwd"]), "/\n");
    assert_eq!(
        berth.container_ok(&["-w", "/data", IMAGE, "pwd"]),
        "/data\n"
    );
    assert_eq!(
        berth.container_ok(&["-w", "/not/there/yet", IMAGE, "pwd"]),
        "/not/there/yet\n",
        "-w creates a missing dir"
    );
    let out = berth.container_ok(&[CONFIG_IMAGE]);
    assert!(out.contains("cwd:/data"), "image WorkingDir: {out}");
    let out = berth.container_ok(&["-w", "/tmp", CONFIG_IMAGE]);
    assert!(out.contains("cwd:/tmp"), "-w beats the image: {out}");
}

// --- user -------------------------------------------------------------------------

#[test]
fn user_by_name_id_and_group() {
    let Some(berth) = Berth::new() else { return };
    let id = |args: &[&str]| {
        let mut full = args.to_vec();
        full.extend_from_slice(&[
            IMAGE,
            "sh",
            "-c",
            "echo $(id -u):$(id -g):$(id -un):$(id -gn):$HOME",
        ]);
        berth.container_ok(&full).trim().to_string()
    };
    assert_eq!(id(&[]), "0:0:root:root:/root");
    assert_eq!(id(&["-u", "user"]), "1000:1000:user:user:/home/user");
    assert_eq!(id(&["-u", "1000"]), "1000:1000:user:user:/home/user");
    assert_eq!(id(&["-u", "1000:50"]), "1000:50:user:staff:/home/user");
    assert_eq!(id(&["-u", "user:staff"]), "1000:50:user:staff:/home/user");
    assert_eq!(
        id(&["-u", "nobody"]),
        "65534:65534:nobody:nogroup:/nonexistent"
    );
}

#[test]
fn numeric_user_not_in_passwd_gets_gid_0() {
    let Some(berth) = Berth::new() else { return };
    let out = berth.container_ok(&["-u", "4242", IMAGE, "sh", "-c", "echo $(id -u):$(id -g)"]);
    assert_eq!(out.trim(), "4242:0");
}

#[test]
fn unknown_user_name_is_an_error() {
    let Some(berth) = Berth::new() else { return };
    let args = ["run", "--rm", "-u", "no-such-user", IMAGE, "true"];
    let out = berth.cmd(&args);
    assert_ne!(code(&out), 0, "{}", describe(&args, &out));
    assert!(
        stderr(&out).contains("no-such-user"),
        "{}",
        describe(&args, &out)
    );
}

#[test]
fn user_gets_supplementary_groups_from_the_image() {
    let Some(berth) = Berth::new() else { return };
    let groups = berth.container_ok(&["-u", "user", IMAGE, "id", "-G"]);
    let groups: Vec<&str> = groups.split_whitespace().collect();
    assert!(
        groups.contains(&"1000") && groups.contains(&"29"),
        "/etc/group lists user in audio (29): {groups:?}"
    );
}

#[test]
fn image_user_entrypoint_and_cmd() {
    let Some(berth) = Berth::new() else { return };
    berth.load_config_image();
    let out = berth.container_ok(&[CONFIG_IMAGE]);
    assert_eq!(
        out, "args:default-cmd\nuser:user\ncwd:/data\n",
        "Entrypoint + Cmd + User + WorkingDir"
    );

    let out = berth.container_ok(&[CONFIG_IMAGE, "a", "b"]);
    assert!(
        out.starts_with("args:a b\n"),
        "arguments replace Cmd, not Entrypoint: {out}"
    );

    let out = berth.container_ok(&["-u", "root", CONFIG_IMAGE]);
    assert!(out.contains("user:root"), "-u beats the image User: {out}");
}

#[test]
fn entrypoint_flag_replaces_entrypoint_and_cmd() {
    let Some(berth) = Berth::new() else { return };
    berth.load_config_image();
    assert_eq!(
        berth.container_ok(&["--entrypoint", "echo", CONFIG_IMAGE, "hi", "there"]),
        "hi there\n"
    );
    // Docker: --entrypoint clears the image's Cmd.
    assert_eq!(
        berth.container_ok(&["--entrypoint", "echo", CONFIG_IMAGE]),
        "\n"
    );
    assert_eq!(
        berth.container_ok(&["--entrypoint", "/bin/id", IMAGE, "-un"]),
        "root\n"
    );
}

// --- hostname and name --------------------------------------------------------------

#[test]
fn hostname_flag_and_etc_hostname() {
    let Some(berth) = Berth::new() else { return };
    let out = berth.container_ok(&[
        "--hostname",
        "box",
        IMAGE,
        "sh",
        "-c",
        "hostname; cat /etc/hostname",
    ]);
    assert_eq!(out, "box\nbox\n");
    let hosts = berth.container_ok(&["--hostname", "box", IMAGE, "cat", "/etc/hosts"]);
    assert!(
        hosts.contains("localhost") && hosts.contains("box"),
        "/etc/hosts:\n{hosts}"
    );
    berth.container_ok(&[IMAGE, "test", "-f", "/etc/resolv.conf"]);

    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let default = berth.container_ok(&[IMAGE, "hostname"]);
    assert!(!default.trim().is_empty());
    assert_ne!(
        default.trim(),
        host.trim(),
        "a container gets its own hostname"
    );
}

#[test]
fn name_is_unique_while_the_container_exists() {
    let Some(berth) = Berth::new() else { return };
    berth.container_ok(&["--name", "web", IMAGE, "true"]);
    berth.container_ok(&["--name", "web", IMAGE, "true"]); // --rm freed the name

    berth.run_ok(&["run", "--name", "kept", IMAGE, "true"]);
    let args = ["run", "--name", "kept", IMAGE, "true"];
    let out = berth.cmd(&args);
    assert_ne!(
        code(&out),
        0,
        "a second container named `kept`: {}",
        describe(&args, &out)
    );
    assert!(
        stderr(&out).contains("kept"),
        "the error names the conflict: {}",
        describe(&args, &out)
    );
}

// --- mounts ----------------------------------------------------------------------------

#[test]
fn volume_read_write_is_visible_on_the_host() {
    let Some(berth) = Berth::new() else { return };
    let dir = berth.host_mkdir("vol");
    berth.host_file("vol/from-host", "host data\n");
    let spec = format!("{}:/srv/vol", dir.display());
    let out = berth.container_ok(&[
        "-v",
        &spec,
        IMAGE,
        "sh",
        "-c",
        "cat /srv/vol/from-host; echo written > /srv/vol/from-ctr",
    ]);
    assert_eq!(out, "host data\n");
    let written = dir.join("from-ctr");
    assert_eq!(
        fs::read_to_string(&written).unwrap_or_default(),
        "written\n"
    );
    let owner = fs::metadata(&written).map(|m| m.uid()).unwrap_or(u32::MAX);
    assert_eq!(
        owner, berth.identity.uid,
        "container root writes as the user who ran berth"
    );
}

#[test]
fn volume_read_only_refuses_writes() {
    let Some(berth) = Berth::new() else { return };
    let dir = berth.host_mkdir("ro");
    berth.host_file("ro/data", "ro data\n");
    let spec = format!("{}:/srv/ro:ro", dir.display());
    assert_eq!(
        berth.container_ok(&["-v", &spec, IMAGE, "cat", "/srv/ro/data"]),
        "ro data\n"
    );
    let args = ["run", "--rm", "-v", &spec, IMAGE, "touch", "/srv/ro/new"];
    let out = berth.cmd(&args);
    assert_ne!(code(&out), 0, "{}", describe(&args, &out));
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        describe(&args, &out)
    );
    assert!(!dir.join("new").exists());
}

#[test]
fn volume_of_a_single_file() {
    let Some(berth) = Berth::new() else { return };
    let file = berth.host_file("config.txt", "one file\n");
    let spec = format!("{}:/etc/app.conf:ro", file.display());
    assert_eq!(
        berth.container_ok(&["-v", &spec, IMAGE, "cat", "/etc/app.conf"]),
        "one file\n"
    );
}

#[test]
fn tmpfs_mount() {
    let Some(berth) = Berth::new() else { return };
    let script = "grep ' /scratch ' /proc/mounts; echo data > /scratch/f && cat /scratch/f";
    let out = berth.container_ok(&["--tmpfs", "/scratch", IMAGE, "sh", "-c", script]);
    assert!(
        out.contains("tmpfs /scratch tmpfs"),
        "/scratch is a tmpfs:\n{out}"
    );
    assert!(out.ends_with("data\n"), "{out}");
}

#[test]
fn read_only_rootfs_with_a_writable_tmpfs() {
    let Some(berth) = Berth::new() else { return };
    let args = ["run", "--rm", "--read-only", IMAGE, "touch", "/new-file"];
    let out = berth.cmd(&args);
    assert_ne!(code(&out), 0, "{}", describe(&args, &out));
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        describe(&args, &out)
    );
    let out = berth.container_ok(&[
        "--read-only",
        "--tmpfs",
        "/tmp",
        IMAGE,
        "sh",
        "-c",
        "echo ok > /tmp/f && cat /tmp/f",
    ]);
    assert_eq!(out, "ok\n");
}

#[test]
fn writes_do_not_outlive_an_rm_container() {
    let Some(berth) = Berth::new() else { return };
    berth.container_ok(&[IMAGE, "sh", "-c", "echo x > /written && rm /data/added"]);
    berth.container_ok(&[IMAGE, "test", "!", "-e", "/written"]);
    berth.container_ok(&[IMAGE, "test", "-f", "/data/added"]);
}

// --- PID 1 and --init --------------------------------------------------------------------

#[test]
fn the_command_is_pid_1_and_sees_only_its_container() {
    let Some(berth) = Berth::new() else { return };
    assert_eq!(berth.container_ok(&[IMAGE, "sh", "-c", "echo $$"]), "1\n");
    // The shell expands the glob itself: no other process exists to list.
    assert_eq!(
        berth.container_ok(&[IMAGE, "sh", "-c", "echo /proc/[0-9]*"]),
        "/proc/1\n"
    );
    let ps = berth.container_ok(&[IMAGE, "ps", "-o", "pid,comm"]);
    let rows = lines(&ps);
    assert_eq!(rows.len(), 2, "ps shows a header and itself only:\n{ps}");
    assert!(rows[1].starts_with('1'), "{ps}");
}

#[test]
fn init_is_pid_1_and_reaps_zombies() {
    let Some(berth) = Berth::new() else { return };
    let out = berth.container_ok(&[
        "--init",
        IMAGE,
        "sh",
        "-c",
        "echo $$; cat /proc/1/cmdline | tr '\\0' ' '",
    ]);
    let rows = lines(&out);
    assert_ne!(rows[0], "1", "with --init the command is not PID 1: {out}");
    assert!(
        !rows.get(1).is_some_and(|c| c.starts_with("sh -c")),
        "PID 1 is the init, not the command: {out}"
    );

    // A grandchild orphaned by its parent is reparented to PID 1 and must be reaped.
    let script = "sh -c 'sleep 0.2 & exit 0'; sleep 1; grep -h '^State:' /proc/[0-9]*/status";
    let out = berth.container_ok(&["--init", IMAGE, "sh", "-c", script]);
    assert!(!out.contains("zombie"), "the init left a zombie:\n{out}");
}

#[test]
fn init_passes_the_exit_status_through() {
    let Some(berth) = Berth::new() else { return };
    let args = ["run", "--rm", "--init", IMAGE, "sh", "-c", "exit 9"];
    assert_exit(&args, &berth.cmd(&args), 9);
    let args = ["run", "--rm", "--init", IMAGE, "sh", "-c", "kill -9 $$"];
    assert_exit(&args, &berth.cmd(&args), 137);
}

// --- many at once ---------------------------------------------------------------------------------

#[test]
fn ten_containers_in_parallel_do_not_interfere() {
    let Some(berth) = Berth::new() else { return };
    let script = "echo \"$MARK\" > /marker; sleep 0.5; cat /marker; ls /tmp; touch /tmp/$MARK; ls /tmp; hostname";
    let results: Vec<(String, std::process::Output)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let berth = &berth;
                scope.spawn(move || {
                    let mark = format!("marker-{i}");
                    let env = format!("MARK={mark}");
                    let out = berth.container(&["-e", &env, IMAGE, "sh", "-c", script]);
                    (mark, out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut hostnames = Vec::new();
    for (mark, out) in &results {
        assert!(
            out.status.success(),
            "{mark}: {}",
            describe(&["run", IMAGE], out)
        );
        let rows = lines(&stdout(out));
        assert_eq!(
            rows.len(),
            3,
            "{mark}: marker, /tmp with only its own file, hostname: {rows:?}"
        );
        assert_eq!(rows[0], *mark, "{mark} read another container's /marker");
        assert_eq!(rows[1], *mark, "{mark} sees other files in /tmp: {rows:?}");
        hostnames.push(rows[2].clone());
    }
    hostnames.sort();
    hostnames.dedup();
    assert_eq!(
        hostnames.len(),
        10,
        "each container has its own hostname: {hostnames:?}"
    );
}

// --- --userns and berth unshare --------------------------------------------------------

#[test]
fn keep_id_files_written_to_a_bind_mount_belong_to_the_user() {
    let Some(berth) = Berth::new() else { return };
    let dir = berth.host_mkdir("src");
    let spec = format!("{}:/src", dir.display());
    let out = berth.container_ok(&[
        "--userns=keep-id",
        "-v",
        &spec,
        "-w",
        "/src",
        IMAGE,
        "sh",
        "-c",
        "id -u; id -g; echo $HOME; grep \":$(id -u):\" /etc/passwd | cut -d: -f6; echo made > /src/made",
    ]);
    let (uid, gid) = (berth.identity.uid, berth.identity.gid);
    assert_eq!(
        lines(&out),
        vec![
            uid.to_string(),
            gid.to_string(),
            "/src".into(),
            "/src".into()
        ],
        "the process runs as the user's ids, which /etc/passwd names, with HOME set"
    );
    let made = dir.join("made");
    assert_eq!(fs::metadata(&made).map(|m| m.uid()).ok(), Some(uid));
    // Other ids inside stay subordinate ones: container root is not the user.
    let out = berth.container_ok(&[
        "--userns=keep-id:uid=1234,gid=1234",
        "-u",
        "0",
        "-v",
        &spec,
        IMAGE,
        "sh",
        "-c",
        "stat -c %u /src/made; touch /src/by-root",
    ]);
    assert_eq!(out, "1234\n", "the user's file is uid 1234 inside");
    let root_owner = fs::metadata(dir.join("by-root")).map(|m| m.uid()).unwrap();
    assert_ne!(root_owner, uid);
    assert_ne!(root_owner, 0);
    // The image's own files keep their owners (root's are root's).
    assert_eq!(
        berth.container_ok(&["--userns=keep-id", IMAGE, "stat", "-c", "%u", "/bin"]),
        "0\n"
    );
}

#[test]
fn keep_id_is_kept_by_a_created_container_and_shown_by_inspect() {
    let Some(berth) = Berth::new() else { return };
    let dir = berth.host_mkdir("src");
    let spec = format!("{}:/src", dir.display());
    berth.run_ok(&[
        "create",
        "--name",
        "kept",
        "--userns=keep-id",
        "-v",
        &spec,
        IMAGE,
        "touch",
        "/src/again",
    ]);
    assert_eq!(
        berth.run_ok(&["inspect", "-f", "{{.HostConfig.UsernsMode}}", "kept"]),
        "keep-id\n"
    );
    berth.run_ok(&["start", "-a", "kept"]);
    let owner = fs::metadata(dir.join("again")).map(|m| m.uid()).ok();
    assert_eq!(owner, Some(berth.identity.uid));
    berth.run_ok(&["rm", "kept"]);
}

#[test]
fn userns_modes_that_cannot_be_honoured_are_refused() {
    let Some(berth) = Berth::new() else { return };
    for (args, says) in [
        (
            vec!["run", "--rm", "--userns=private", IMAGE, "true"],
            "keep-id:uid=N,gid=N",
        ),
        (
            vec!["create", "--userns=auto", IMAGE, "true"],
            "keep-id:uid=N,gid=N",
        ),
        (
            vec!["run", "--rm", "--userns=host", IMAGE, "true"],
            "needs berth to run as root",
        ),
        (
            vec!["run", "--rm", "--vm", "--userns=host", IMAGE, "true"],
            "not available with --vm",
        ),
    ] {
        let out = berth.cmd(&args);
        assert_exit(&args, &out, 125);
        assert!(stderr(&out).contains(says), "{}", describe(&args, &out));
    }
    let args = ["run", "--rm", "--userns=", IMAGE, "id", "-u"];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 0);
    assert_eq!(
        stdout(&out),
        "0\n",
        "an empty --userns is berth's default map"
    );
}

#[test]
fn unshare_lets_the_user_remove_files_of_subordinate_ids() {
    let Some(berth) = Berth::new() else { return };
    let dir = berth.host_mkdir("proj");
    fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let spec = format!("{}:/src", dir.display());
    // Docker's `-u 1000` idiom, without keep-id: the files land on a subordinate id.
    berth.container_ok(&[
        "-u",
        "1000",
        "-v",
        &spec,
        IMAGE,
        "sh",
        "-c",
        "mkdir /src/build && touch /src/build/out",
    ]);
    let build = dir.join("build");
    assert_ne!(
        fs::metadata(&build).map(|m| m.uid()).unwrap(),
        berth.identity.uid
    );
    let rm = ["/bin/rm", "-rf", "--", &build.to_string_lossy()];
    let out = finish_as_user(&berth, &rm);
    assert_ne!(code(&out), 0, "the user alone cannot remove it");
    assert!(build.join("out").exists());

    assert_eq!(berth.run_ok(&["unshare", "id", "-u"]), "0\n");
    let path = build.to_string_lossy().to_string();
    berth.run_ok(&["unshare", "rm", "-rf", &path]);
    assert!(!build.exists(), "berth unshare rm removed it");
    let args = ["unshare", "sh", "-c", "exit 7"];
    assert_exit(&args, &berth.cmd(&args), 7);
}

/// `PROGRAM ARGS` run as the fixture's user, outside berth.
fn finish_as_user(berth: &Berth, argv: &[&str]) -> std::process::Output {
    let cmd = berth.command_of(std::path::Path::new(argv[0]), &argv[1..]);
    common::finish(cmd, None, argv)
}
