//! `berth run -t` under a real pseudo-terminal: the container gets a pty of
//! its own with the outer terminal's size, resizes follow, input flows in.

mod common;

use std::time::Duration;

use common::{Berth, IMAGE};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn t_gives_a_pty_with_the_outer_size() {
    let Some(berth) = Berth::new() else { return };
    let session = berth.spawn_pty(
        &[
            "run",
            "--rm",
            "-t",
            IMAGE,
            "sh",
            "-c",
            "stty size; tty; test -t 0 && echo stdin-is-tty",
        ],
        31,
        97,
    );
    let (status, output) = session.wait(WAIT);
    assert!(
        status.success(),
        "berth run -t failed: {status:?}\n{output}"
    );
    assert!(
        output.contains("31 97"),
        "stty size inside is the outer pty's size:\n{output}"
    );
    assert!(
        output.contains("/dev/pts/0"),
        "the container's own pty is /dev/pts/0:\n{output}"
    );
    assert!(output.contains("stdin-is-tty"), "{output}");
}

#[test]
fn it_session_takes_input_and_returns_the_exit_status() {
    let Some(berth) = Berth::new() else { return };
    let mut session = berth.spawn_pty(&["run", "--rm", "-i", "-t", IMAGE, "sh"], 24, 80);
    session.write("echo $((6 * 7))-answer\r");
    session.expect("42-answer", WAIT);
    session.write("exit 5\r");
    let (status, output) = session.wait(WAIT);
    assert_eq!(
        status.code(),
        Some(5),
        "exit status through the pty session:\n{output}"
    );
}

#[test]
fn window_resize_reaches_the_container() {
    let Some(berth) = Berth::new() else { return };
    let script = "trap 'stty size' WINCH; echo ready; i=0; while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done";
    let mut session = berth.spawn_pty(&["run", "--rm", "-t", IMAGE, "sh", "-c", script], 24, 80);
    session.expect("ready", WAIT);
    session.resize(40, 120);
    session.expect("40 120", WAIT);
}

#[test]
fn ctrl_c_in_a_t_session_interrupts_the_container() {
    let Some(berth) = Berth::new() else { return };
    let script = "trap 'echo got-int; exit 4' INT; echo ready; while :; do sleep 0.1; done";
    let mut session = berth.spawn_pty(
        &["run", "--rm", "-i", "-t", IMAGE, "sh", "-c", script],
        24,
        80,
    );
    session.expect("ready", WAIT);
    // Raw mode on the outer terminal: ^C travels as a byte to the container's pty.
    session.write("\x03");
    session.expect("got-int", WAIT);
    let (status, output) = session.wait(WAIT);
    assert_eq!(status.code(), Some(4), "{output}");
}
