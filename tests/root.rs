//! berth run by root: the same image, the same results.

mod common;

use common::{assert_exit, lines, Berth, IMAGE};

#[test]
fn root_can_run_containers_too() {
    let Some(berth) = Berth::as_root() else {
        return;
    };
    assert_eq!(
        berth.container_ok(&[IMAGE, "echo", "hello from root"]),
        "hello from root\n"
    );
    let args = ["run", "--rm", IMAGE, "sh", "-c", "exit 7"];
    assert_exit(&args, &berth.cmd(&args), 7);
    let args = ["run", "--rm", "--init", IMAGE, "sh", "-c", "kill -9 $$"];
    assert_exit(&args, &berth.cmd(&args), 137);

    let out = berth.container_ok(&[IMAGE, "sh", "-c", "ls -A /data; echo --; ls -A /data/dir"]);
    assert_eq!(lines(&out), ["added", "dir", "--", "new-b"], "whiteouts");
    let out = berth.container_ok(&[
        "-u",
        "user",
        IMAGE,
        "sh",
        "-c",
        "echo $(id -u):$(stat -c %u /etc/owned-by-1000)",
    ]);
    assert_eq!(out, "1000:1000\n");
    assert_eq!(berth.container_ok(&[IMAGE, "sh", "-c", "echo $$"]), "1\n");
}
