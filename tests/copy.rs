//! `berth cp` between the host and a container (running or stopped, files and directories,
//! Docker's destination rules, tar streams) and `berth commit` (a container's changes, its
//! deletions included, as an image that runs), through the real binary as the test user.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use serde_json::Value;

use common::{assert_exit, describe, stderr, stdout, Berth, IMAGE};

const SERVER: &str = "while :; do sleep 0.1; done";

#[test]
fn cp_to_and_from_a_running_container() {
    let Some(berth) = Berth::new() else { return };
    berth.run_ok(&["run", "-d", "--name", "box", IMAGE, "sh", "-c", SERVER]);
    let tree = berth.host_mkdir("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    fs::write(tree.join("sub/deep"), "deep\n").unwrap();
    fs::write(tree.join("top"), "top\n").unwrap();
    let src = tree.to_string_lossy().to_string();
    // A file into an existing directory, a directory to a new path, a directory's contents.
    berth.run_ok(&["cp", &format!("{src}/top"), "box:/tmp"]);
    berth.run_ok(&["cp", &src, "box:/copied"]);
    berth.run_ok(&["exec", "box", "mkdir", "/contents"]);
    berth.run_ok(&["cp", &format!("{src}/."), "box:/contents"]);
    let listing = berth.run_ok(&[
        "exec",
        "box",
        "sh",
        "-c",
        "cat /tmp/top /copied/sub/deep; ls /contents; stat -c %u /copied/top",
    ]);
    assert_eq!(
        listing, "top\ndeep\nsub\ntop\n0\n",
        "owned by the container's root"
    );
    // Back to the host: a directory into an existing one, a file to a new name.
    let back = berth.host_mkdir("back");
    berth.run_ok(&["cp", "box:/copied", &back.to_string_lossy()]);
    assert_eq!(
        fs::read_to_string(back.join("copied/sub/deep")).unwrap(),
        "deep\n"
    );
    berth.run_ok(&["cp", "box:/etc/passwd", &back.join("pw").to_string_lossy()]);
    assert!(fs::read_to_string(back.join("pw"))
        .unwrap()
        .contains("user:x:1000"));
    let mine = fs::metadata(back.join("pw")).unwrap().uid();
    assert_eq!(mine, berth.identity.uid, "owned by the user on the host");
    // A symlink is copied as a link, not followed.
    berth.run_ok(&["exec", "box", "ln", "-s", "/etc/passwd", "/link"]);
    berth.run_ok(&["cp", "box:/link", &back.join("link").to_string_lossy()]);
    assert_eq!(
        fs::read_link(back.join("link")).unwrap().to_string_lossy(),
        "/etc/passwd"
    );
    // Errors say what is wrong.
    let back_s = back.to_string_lossy();
    let args = ["cp", "box:/no/such/file", back_s.as_ref()];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 1);
    assert!(
        stderr(&out).contains("/no/such/file"),
        "{}",
        describe(&args, &out)
    );
    let out = berth.cmd(&["cp", &src, "/tmp/elsewhere"]);
    assert!(stderr(&out).contains("CONTAINER:PATH"), "{}", stderr(&out));
    berth.run_ok(&["rm", "-f", "box"]);
}

#[test]
fn cp_with_a_stopped_container_and_tar_streams() {
    let Some(berth) = Berth::new() else { return };
    berth.run_ok(&["create", "--name", "later", IMAGE, "cat", "/greeting"]);
    let greeting = berth.host_file("greeting", "hello from the host\n");
    berth.run_ok(&["cp", &greeting.to_string_lossy(), "later:/greeting"]);
    let args = ["start", "-a", "later"];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 0);
    assert_eq!(stdout(&out), "hello from the host\n");
    // From the stopped container, as a tar stream on stdout.
    let out = berth.cmd(&["cp", "later:/data", "-"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut archive = tar::Archive::new(&out.stdout[..]);
    let mut names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path().unwrap().to_string_lossy().into_owned();
            p.trim_end_matches('/').to_string()
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["data", "data/added", "data/dir", "data/dir/new-b"]
    );
    // And a stream in.
    let mut tar_bytes = Vec::new();
    {
        let mut t = tar::Builder::new(&mut tar_bytes);
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        t.append_data(&mut h, "streamed", &b"in\n"[..]).unwrap();
        t.finish().unwrap();
    }
    let args = ["cp", "-", "later:/tmp"];
    let out = berth.cmd_with_stdin(&args, &tar_bytes);
    assert_exit(&args, &out, 0);
    let back = berth.host_mkdir("back");
    berth.run_ok(&["cp", "later:/tmp/streamed", &back.to_string_lossy()]);
    assert_eq!(fs::read_to_string(back.join("streamed")).unwrap(), "in\n");
    berth.run_ok(&["rm", "later"]);
}

#[test]
fn commit_makes_an_image_of_the_containers_changes() {
    let Some(berth) = Berth::new() else { return };
    let script = "mkdir -p /app && echo built > /app/out && rm /data/added && echo 1000 > /etc/owned-by-1000 && chown 1000 /app/out";
    berth.run_ok(&["run", "--name", "builder", IMAGE, "sh", "-c", script]);
    let out = berth.run_ok(&[
        "commit",
        "-m",
        "added /app",
        "-a",
        "tester",
        "-c",
        "CMD [\"cat\", \"/app/out\"]",
        "-c",
        "ENV STAGE=committed",
        "builder",
        "localhost/committed:1",
    ]);
    let id = out.trim();
    assert!(
        id.starts_with("sha256:") && id.len() == 71,
        "commit prints the image id: {out}"
    );
    let images = berth.run_ok(&["images"]);
    assert!(
        images.contains("localhost/committed") && images.contains(" 1 "),
        "{images}"
    );
    // The new layer is unpacked already, from the tar commit wrote: the image's first run
    // does not decompress and unpack it again.
    let inspect: Value =
        serde_json::from_str(&berth.run_ok(&["image", "inspect", "localhost/committed:1"]))
            .unwrap();
    let diff_id = inspect[0]["RootFS"]["Layers"]
        .as_array()
        .and_then(|l| l.last())
        .and_then(|d| d.as_str())
        .unwrap_or_else(|| panic!("no RootFS.Layers in {inspect:#}"))
        .to_string();
    let unpacked = berth
        .root
        .join("data/layers")
        .join(diff_id.trim_start_matches("sha256:"));
    assert!(
        unpacked.join("app/out").is_file(),
        "commit leaves the new layer unpacked at {}",
        unpacked.display()
    );
    // The image runs: its CMD, its files, the deletion, the owner, the environment.
    assert_eq!(berth.container_ok(&["localhost/committed:1"]), "built\n");
    let check = berth.container_ok(&[
        "localhost/committed:1",
        "sh",
        "-c",
        "ls /data; stat -c %u /app/out; cat /etc/owned-by-1000; echo $STAGE",
    ]);
    assert_eq!(
        check, "dir\n1000\n1000\ncommitted\n",
        "no /data/added, owner kept"
    );
    let history: Value =
        serde_json::from_str(&berth.run_ok(&["image", "inspect", "localhost/committed:1"]))
            .unwrap();
    let text = history.to_string();
    assert!(
        text.contains("added /app") || text.contains("tester"),
        "{text}"
    );
    // Layers are shared: the image is the parent's layers plus one.
    let parent_layers = berth.run_ok(&["history", IMAGE]).lines().count();
    let child_layers = berth
        .run_ok(&["history", "localhost/committed:1"])
        .lines()
        .count();
    assert_eq!(child_layers, parent_layers + 1);

    // A running container can be committed too (with a warning), and without a name.
    berth.run_ok(&[
        "run",
        "-d",
        "--name",
        "live",
        IMAGE,
        "sh",
        "-c",
        "echo live > /live; while :; do sleep 0.1; done",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while berth.cmd(&["exec", "live", "cat", "/live"]).stdout != b"live\n" {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let args = ["commit", "live"];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 0);
    assert!(
        stderr(&out).contains("cannot be paused"),
        "{}",
        describe(&args, &out)
    );
    let untagged = stdout(&out).trim().to_string();
    assert_eq!(
        berth.container_ok(&[&untagged[7..19], "cat", "/live"]),
        "live\n"
    );
    berth.run_ok(&["rm", "-f", "live", "builder"]);
}
