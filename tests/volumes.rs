//! Volumes: `berth volume create|ls|inspect|rm|prune`, `-v NAME:/path` (created on first
//! use, filled from the image as Docker does), anonymous volumes and `rm -v`,
//! `--mount type=bind|volume|tmpfs`, `--volumes-from`, through the real binary as the
//! unprivileged test user.

mod common;

use serde_json::Value;

use common::{assert_exit, describe, stderr, stdout, Berth, IMAGE};

const SERVER: &str = "while :; do sleep 0.1; done";
const PRIVATE_IMAGE: &str = "localhost/berth-private:latest";

fn volume_names(berth: &Berth) -> Vec<String> {
    berth
        .run_ok(&["volume", "ls", "-q"])
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn a_volume_outlives_its_containers_and_is_shared() {
    let Some(berth) = Berth::new() else { return };
    berth.run_ok(&[
        "run",
        "-d",
        "--name",
        "writer",
        "-v",
        "shared:/srv/vol",
        IMAGE,
        "sh",
        "-c",
        SERVER,
    ]);
    berth.run_ok(&[
        "run",
        "-d",
        "--name",
        "reader",
        "-v",
        "shared:/srv/vol",
        IMAGE,
        "sh",
        "-c",
        SERVER,
    ]);
    berth.run_ok(&[
        "exec",
        "writer",
        "sh",
        "-c",
        "echo from-writer > /srv/vol/note",
    ]);
    assert_eq!(
        berth.run_ok(&["exec", "reader", "cat", "/srv/vol/note"]),
        "from-writer\n",
        "two running containers share the volume"
    );
    let args = ["volume", "rm", "shared"];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 1);
    assert!(
        stderr(&out).contains("in use") && stderr(&out).contains("berth rm"),
        "{}",
        describe(&args, &out)
    );
    berth.run_ok(&["rm", "-f", "-v", "writer", "reader"]);
    assert_eq!(
        volume_names(&berth),
        vec!["shared"],
        "a named volume survives rm -v"
    );
    let again = berth.container_ok(&["-v", "shared:/mnt/v", IMAGE, "cat", "/mnt/v/note"]);
    assert_eq!(again, "from-writer\n", "its data too");
    // Files of another user in it are removed with it.
    berth.container_ok(&[
        "-v",
        "shared:/v",
        IMAGE,
        "sh",
        "-c",
        "mkdir /v/d && chown 1000 /v/d",
    ]);
    berth.container_ok(&[
        "-u",
        "1000",
        "-v",
        "shared:/v",
        IMAGE,
        "sh",
        "-c",
        "echo x > /v/d/f && chmod 700 /v/d",
    ]);
    let mountpoint = berth.run_ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", "shared"]);
    assert!(
        std::path::Path::new(mountpoint.trim()).is_dir(),
        "{mountpoint}"
    );
    assert_eq!(berth.run_ok(&["volume", "rm", "shared"]).trim(), "shared");
    assert!(volume_names(&berth).is_empty());
    assert!(
        !std::path::Path::new(mountpoint.trim()).exists(),
        "its data is gone"
    );
}

#[test]
fn a_new_volume_starts_with_the_images_files() {
    let Some(berth) = Berth::new() else { return };
    // /data in the image: the second layer removed remove-me and made dir/ opaque.
    let ls = berth.container_ok(&["-v", "seeded:/data", IMAGE, "find", "/data"]);
    let mut found: Vec<&str> = ls.lines().collect();
    found.sort();
    assert_eq!(
        found,
        vec!["/data", "/data/added", "/data/dir", "/data/dir/new-b"],
        "the volume holds the image's merged /data"
    );
    // Owners come along: /etc/owned-by-1000 is 1000's in the image.
    let owner = berth.container_ok(&[
        "-v",
        "etc:/etc",
        IMAGE,
        "stat",
        "-c",
        "%u",
        "/etc/owned-by-1000",
    ]);
    assert_eq!(owner.trim(), "1000");
    // A volume in use keeps its own content.
    berth.container_ok(&[
        "-v",
        "seeded:/data",
        IMAGE,
        "sh",
        "-c",
        "rm /data/added; echo mine > /data/mine",
    ]);
    let ls = berth.container_ok(&["-v", "seeded:/data", IMAGE, "ls", "/data"]);
    assert_eq!(ls, "dir\nmine\n", "not filled again");
    // nocopy: empty.
    let ls = berth.container_ok(&["-v", "bare:/data:nocopy", IMAGE, "ls", "-A", "/data"]);
    assert_eq!(ls, "");
    berth.run_ok(&["volume", "rm", "seeded", "etc", "bare"]);
}

#[test]
fn anonymous_volumes_go_with_rm_v_and_prune() {
    let Some(berth) = Berth::new() else { return };
    berth.run_ok(&[
        "run",
        "--name",
        "anon1",
        "-v",
        "/cache",
        IMAGE,
        "sh",
        "-c",
        "echo x > /cache/f",
    ]);
    berth.run_ok(&["run", "--name", "anon2", "-v", "/cache", IMAGE, "true"]);
    let names = volume_names(&berth);
    assert_eq!(names.len(), 2, "one anonymous volume each: {names:?}");
    assert!(names.iter().all(|n| n.len() == 64));
    let inspect: Value = serde_json::from_str(&berth.run_ok(&["inspect", "anon1"])).unwrap();
    let mount = &inspect[0]["Mounts"][0];
    assert_eq!(mount["Type"], "volume");
    assert_eq!(mount["Destination"], "/cache");
    let anon1 = mount["Name"].as_str().unwrap().to_string();
    berth.run_ok(&["rm", "-v", "anon1"]);
    assert!(!volume_names(&berth).contains(&anon1), "rm -v removes it");
    berth.run_ok(&["rm", "anon2"]);
    assert_eq!(volume_names(&berth).len(), 1, "rm without -v keeps it");
    berth.run_ok(&["volume", "create", "--label", "keep=yes", "named"]);
    let dangling = berth.run_ok(&["volume", "ls", "-q", "--filter", "dangling=true"]);
    assert_eq!(dangling.lines().count(), 2);
    let pruned = berth.run_ok(&["volume", "prune", "-f"]);
    assert!(pruned.contains("Total reclaimed volumes: 1"), "{pruned}");
    assert_eq!(
        volume_names(&berth),
        vec!["named"],
        "prune keeps named volumes"
    );
    berth.run_ok(&["volume", "prune", "-a"]);
    assert!(
        volume_names(&berth).is_empty(),
        "prune -a takes every unused one"
    );
    // --rm takes the anonymous volumes with the container.
    berth.container_ok(&["-v", "/tmpvol", IMAGE, "true"]);
    assert!(volume_names(&berth).is_empty());
}

#[test]
fn mount_flag_bind_volume_and_tmpfs() {
    let Some(berth) = Berth::new() else { return };
    let host = berth.host_mkdir("share");
    std::fs::write(host.join("hello"), "from host\n").unwrap();
    let bind = format!("type=bind,source={},target=/h,readonly", host.display());
    let script = "cat /h/hello; touch /h/new 2>/dev/null && echo writable || echo read-only; \
                  echo v > /m/file; grep ' /t ' /proc/mounts | cut -d' ' -f3,4";
    let out = berth.container_ok(&[
        "--mount",
        &bind,
        "--mount",
        "type=volume,src=mvol,dst=/m",
        "--mount",
        "type=tmpfs,destination=/t,tmpfs-size=1m",
        IMAGE,
        "sh",
        "-c",
        script,
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "from host");
    assert_eq!(lines[1], "read-only");
    assert!(
        lines[2].starts_with("tmpfs") && lines[2].contains("size=1024k"),
        "{out}"
    );
    assert_eq!(volume_names(&berth), vec!["mvol"]);
    let args = [
        "run",
        "--rm",
        "--mount",
        "type=bind,source=/no/such/dir,target=/x",
        IMAGE,
        "true",
    ];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 125);
    assert!(
        stderr(&out).contains("does not exist"),
        "{}",
        describe(&args, &out)
    );
    let args = ["run", "--rm", "-v", "a:/x", "-v", "b:/x", IMAGE, "true"];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 125);
    assert!(
        stderr(&out).contains("duplicate mount point"),
        "{}",
        describe(&args, &out)
    );
    berth.run_ok(&["volume", "rm", "mvol"]);
}

#[test]
fn volumes_from_shares_another_containers_mounts() {
    let Some(berth) = Berth::new() else { return };
    let host = berth.host_mkdir("bound");
    let bind = format!("{}:/bound", host.display());
    berth.run_ok(&[
        "create",
        "--name",
        "source",
        "-v",
        "data:/data",
        "-v",
        &bind,
        IMAGE,
        "true",
    ]);
    berth.container_ok(&[
        "--volumes-from",
        "source",
        IMAGE,
        "sh",
        "-c",
        "echo v > /data/from; echo b > /bound/from",
    ]);
    assert_eq!(std::fs::read_to_string(host.join("from")).unwrap(), "b\n");
    let out = berth.container_ok(&["-v", "data:/d", IMAGE, "cat", "/d/from"]);
    assert_eq!(out, "v\n");
    let args = [
        "run",
        "--rm",
        "--volumes-from",
        "source:ro",
        IMAGE,
        "touch",
        "/data/x",
    ];
    let out = berth.cmd(&args);
    assert_ne!(
        common::code(&out),
        0,
        "read-only: {}",
        describe(&args, &out)
    );
    let args = [
        "run",
        "--rm",
        "--volumes-from",
        "nobody-here",
        IMAGE,
        "true",
    ];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 125);
    assert!(
        stderr(&out).contains("no such container"),
        "{}",
        describe(&args, &out)
    );
    berth.run_ok(&["rm", "source"]);
    berth.run_ok(&["volume", "rm", "data"]);
}

#[test]
fn volume_commands() {
    let Some(berth) = Berth::new() else { return };
    assert_eq!(
        berth
            .run_ok(&["volume", "create", "--label", "a=b", "v1"])
            .trim(),
        "v1"
    );
    let generated = berth.run_ok(&["volume", "create"]).trim().to_string();
    assert_eq!(generated.len(), 64);
    let v: Value = serde_json::from_str(&berth.run_ok(&["volume", "inspect", "v1"])).unwrap();
    assert_eq!(v[0]["Name"], "v1");
    assert_eq!(v[0]["Driver"], "local");
    assert_eq!(v[0]["Labels"]["a"], "b");
    assert!(v[0]["CreatedAt"].as_str().unwrap().ends_with('Z'));
    let table = berth.run_ok(&["volume", "ls"]);
    assert!(
        table.starts_with("DRIVER") && table.contains("v1"),
        "{table}"
    );
    assert_eq!(
        berth
            .run_ok(&["volume", "ls", "-q", "--filter", "name=v1"])
            .trim(),
        "v1"
    );
    let args = ["volume", "inspect", "nope"];
    let out = berth.cmd(&args);
    assert_exit(&args, &out, 1);
    assert!(
        stderr(&out).contains("no such volume"),
        "{}",
        describe(&args, &out)
    );
    let args = ["volume", "create", "bad/name"];
    assert_exit(&args, &berth.cmd(&args), 1);
    assert_eq!(
        stdout(&berth.cmd(&["volume", "rm", "v1", &generated]))
            .lines()
            .count(),
        2
    );
    assert!(volume_names(&berth).is_empty());
}

#[test]
fn a_volume_under_a_directory_the_host_user_cannot_enter() {
    let Some(berth) = Berth::new() else { return };
    // /private is 0700 and uid 1000's in the image (a subordinate id on the host): berth
    // resolves the volume's path inside the image, in the user namespace where it may look.
    let archive = common::image::archive_with_layer(
        PRIVATE_IMAGE,
        &[
            common::image::Entry::Private("private"),
            common::image::Entry::Dir("private/cache"),
            common::image::Entry::File("private/cache/seed", b"from the image\n"),
        ],
    )
    .expect("building the image");
    let path = berth.host_path("private.tar");
    std::fs::write(&path, archive).expect("writing the image");
    berth.load(&path);
    let out = berth.container_ok(&[
        "-v",
        "private:/private/cache",
        PRIVATE_IMAGE,
        "cat",
        "/private/cache/seed",
    ]);
    assert_eq!(
        out, "from the image\n",
        "the volume is filled from the image"
    );
    berth.run_ok(&["volume", "rm", "private"]);
}
