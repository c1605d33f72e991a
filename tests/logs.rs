//! What a detached container prints, kept by its monitor: `berth logs` (streams apart,
//! `-f`, `--tail`, `--since`/`--until`, `--timestamps`, rotation within the size bound) and
//! `berth attach` / `start -a -i` (stdin in, output out, the detach keys of a terminal).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{assert_exit, describe, stderr, stdout, Berth, IMAGE};

const WAIT: Duration = Duration::from_secs(60);

fn run_detached(berth: &Berth, args: &[&str]) -> String {
    let mut full = vec!["run", "-d"];
    full.extend_from_slice(args);
    let out = berth.cmd(&full);
    assert_exit(&full, &out, 0);
    stdout(&out).trim().to_string()
}

fn inspect(berth: &Berth, name: &str) -> Value {
    let out = berth.run_ok(&["inspect", name]);
    serde_json::from_str::<Value>(&out).unwrap()[0].clone()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn stdout_and_stderr_stay_apart_and_outlive_the_container() {
    let Some(berth) = Berth::new() else { return };
    let script = "echo to-out; echo to-err >&2; printf no-newline; exit 0";
    run_detached(&berth, &["--name", "talk", IMAGE, "sh", "-c", script]);
    assert_eq!(berth.run_ok(&["wait", "talk"]).trim(), "0");
    let args = ["logs", "talk"];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 0);
    assert_eq!(
        stdout(&out),
        "to-out\nno-newline",
        "stdout only, partial last line kept:\n{}",
        describe(&args, &out)
    );
    assert_eq!(stderr(&out), "to-err\n", "{}", describe(&args, &out));
    // Once more after a restart of the same container: the log grows, nothing is lost.
    berth.run_ok(&["start", "talk"]);
    berth.run_ok(&["wait", "talk"]);
    let out = berth.run_ok(&["logs", "talk"]);
    assert_eq!(out.matches("to-out").count(), 2, "{out}");
    berth.run_ok(&["rm", "talk"]);
}

#[test]
fn logs_follow_prints_new_lines_until_the_container_stops() {
    let Some(berth) = Berth::new() else { return };
    let script = "i=0; while :; do i=$((i+1)); echo line-$i; sleep 0.2; done";
    run_detached(&berth, &["--name", "ticker", IMAGE, "sh", "-c", script]);
    let mut follow = berth.spawn(&["logs", "-f", "ticker"]);
    follow.wait_for_line("line-2", WAIT);
    // Lines written after the command started reach it.
    follow.wait_for_line("line-6", WAIT);
    berth.run_ok(&["stop", "-t", "0", "ticker"]);
    let out = follow.wait(WAIT);
    assert!(
        out.status.success(),
        "logs -f ends with the container: {out:?}"
    );
    let text = stdout(&out);
    let numbers: Vec<u32> = text
        .lines()
        .filter_map(|l| l.strip_prefix("line-")?.parse().ok())
        .collect();
    assert!(numbers.len() >= 6, "{text}");
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "every line once, in order:\n{text}"
    );
    berth.run_ok(&["rm", "ticker"]);
}

#[test]
fn tail_since_until_and_timestamps() {
    let Some(berth) = Berth::new() else { return };
    let script =
        "for i in 1 2 3 4 5; do echo n$i; done; sleep 1; for i in 6 7 8 9 10; do echo n$i; done";
    run_detached(&berth, &["--name", "ten", IMAGE, "sh", "-c", script]);
    berth.run_ok(&["wait", "ten"]);
    assert_eq!(
        berth.run_ok(&["logs", "--tail", "3", "ten"]),
        "n8\nn9\nn10\n"
    );
    assert_eq!(berth.run_ok(&["logs", "-n", "0", "ten"]), "");
    let stamped = berth.run_ok(&["logs", "-t", "--tail", "5", "ten"]);
    for line in stamped.lines() {
        let (stamp, rest) = line.split_once(' ').unwrap();
        assert!(
            stamp.len() == 30 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "an RFC 3339 time first: {line}"
        );
        assert!(rest.starts_with('n'), "{line}");
    }
    assert_eq!(
        berth
            .run_ok(&["logs", "--since", "1h", "ten"])
            .lines()
            .count(),
        10
    );
    assert_eq!(
        berth.run_ok(&["logs", "--since", "2999-01-01T00:00:00Z", "ten"]),
        ""
    );
    assert_eq!(berth.run_ok(&["logs", "--until", "2000-01-01", "ten"]), "");
    let first = stamped.lines().next().unwrap().split(' ').next().unwrap();
    let since = berth.run_ok(&["logs", "--since", first, "ten"]);
    assert_eq!(
        since, "n6\nn7\nn8\nn9\nn10\n",
        "--since takes the printed times"
    );
    let args = ["logs", "--since", "yesterday", "ten"];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 1);
    assert!(
        stderr(&out).contains("RFC 3339"),
        "{}",
        describe(&args, &out)
    );
    berth.run_ok(&["rm", "ten"]);
}

#[test]
fn the_log_rotates_within_its_bound() {
    let Some(berth) = Berth::new() else { return };
    let script = "i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done";
    let id = run_detached(
        &berth,
        &[
            "--name",
            "chatty",
            "--log-opt",
            "max-size=8k",
            "--log-opt",
            "max-file=3",
            IMAGE,
            "sh",
            "-c",
            script,
        ],
    );
    berth.run_ok(&["wait", "chatty"]);
    let dir: PathBuf = berth.root.join("data/containers").join(&id);
    let log = dir.join("container.log");
    let mut total = 0;
    for name in ["container.log", "container.log.1", "container.log.2"] {
        let len = std::fs::metadata(dir.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .len();
        assert!(len <= 8 * 1024, "{name} is {len} bytes, over max-size");
        total += len;
    }
    assert!(
        !dir.join("container.log.3").exists(),
        "at most max-file files"
    );
    assert!(total > 16 * 1024, "the files are used");
    assert_eq!(
        inspect(&berth, "chatty")["LogPath"],
        log.to_string_lossy().as_ref()
    );
    let text = berth.run_ok(&["logs", "chatty"]);
    let numbers: Vec<u32> = text
        .lines()
        .map(|l| l.strip_prefix("line-").unwrap().parse().unwrap())
        .collect();
    assert_eq!(*numbers.last().unwrap(), 2999, "the newest lines are kept");
    assert!(numbers[0] > 0, "the oldest went with rotation");
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "no line lost between the files"
    );
    berth.run_ok(&["rm", "chatty"]);
}

#[test]
fn attach_relays_stdin_and_returns_the_exit_status() {
    let Some(berth) = Berth::new() else { return };
    run_detached(
        &berth,
        &[
            "-i",
            "--name",
            "reader",
            IMAGE,
            "sh",
            "-c",
            "echo ready; read l; echo got-$l; exit 4",
        ],
    );
    let args = ["attach", "reader"];
    let out = berth.cmd_with_stdin(&args, b"hello\n");
    assert_exit(&args, &out, 4);
    assert!(
        stdout(&out).contains("got-hello"),
        "{}",
        describe(&args, &out)
    );
    // The output is in the log too, with what came before the attach.
    let logs = berth.run_ok(&["logs", "reader"]);
    assert!(
        logs.contains("ready") && logs.contains("got-hello"),
        "{logs}"
    );

    berth.run_ok(&[
        "create",
        "-i",
        "--name",
        "later",
        IMAGE,
        "sh",
        "-c",
        "read l; echo got-$l",
    ]);
    let args = ["start", "-a", "-i", "later"];
    let out = berth.cmd_with_stdin(&args, b"world\n");
    assert_exit(&args, &out, 0);
    assert_eq!(stdout(&out), "got-world\n", "{}", describe(&args, &out));
    let args = ["attach", "later"];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 1);
    assert!(
        stderr(&out).contains("not running"),
        "{}",
        describe(&args, &out)
    );
    berth.run_ok(&["rm", "reader", "later"]);
}

/// A line-reading loop on the container's terminal: `size` prints the terminal size,
/// `quit` exits with status 6, anything else is echoed back as `got-LINE`.
const TERMINAL_LOOP: &str =
    "while read l; do case $l in size) stty size;; quit) exit 6;; *) echo got-$l;; esac; done";

#[test]
fn detach_keys_leave_a_terminal_container_running() {
    let Some(berth) = Berth::new() else { return };
    run_detached(
        &berth,
        &["-it", "--name", "term", IMAGE, "sh", "-c", TERMINAL_LOOP],
    );
    let mut session = berth.spawn_pty(&["attach", "term"], 30, 100);
    session.write("hello\r");
    session.expect("got-hello", WAIT);
    session.write("size\r");
    session.expect("30 100", WAIT);
    session.write("\x10\x11");
    let (status, output) = session.wait(WAIT);
    assert!(status.success(), "detaching exits 0: {status:?}\n{output}");
    assert!(output.contains("detached"), "{output}");
    assert_eq!(inspect(&berth, "term")["State"]["Running"], true);

    // Other keys: Ctrl-P Ctrl-Q reach the container; its own end ends the session.
    let mut session = berth.spawn_pty(&["attach", "--detach-keys", "ctrl-a,x", "term"], 24, 80);
    session.write("size\r");
    session.expect("24 80", WAIT);
    session.write("\x10\x11again\r");
    session.expect("again", WAIT);
    session.write("quit\r");
    let (status, output) = session.wait(WAIT);
    assert_eq!(status.code(), Some(6), "{output}");
    wait_until("the container to end", || {
        inspect(&berth, "term")["State"]["Status"] == "exited"
    });
    let logs = berth.run_ok(&["logs", "term"]);
    assert!(
        logs.contains("got-hello"),
        "a terminal's output is logged too:\n{logs}"
    );
    berth.run_ok(&["rm", "term"]);
}

#[test]
fn logs_of_a_foreground_run_say_why_there_are_none() {
    let Some(berth) = Berth::new() else { return };
    berth.run_ok(&["run", "--name", "fg", IMAGE, "echo", "hi"]);
    let args = ["logs", "fg"];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 1);
    assert!(stderr(&out).contains("-d"), "{}", describe(&args, &out));
    berth.run_ok(&["rm", "fg"]);
}
