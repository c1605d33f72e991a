//! Limits and clear errors (issue 16, item 5), through the real binary as the unprivileged
//! test user: `--ulimit` in Docker's syntax reaches the container's process (and bounds a
//! fork bomb), `-v DIR:/` and a `--stop-timeout` out of range are refused with Docker's 125,
//! and a full disk while unpacking says so instead of blaming the image.

mod common;

use std::path::PathBuf;

use common::{assert_exit, code, describe, stderr, stdout, Berth, IMAGE};

#[test]
fn ulimit_nofile_sets_the_soft_and_hard_limits() {
    let Some(berth) = Berth::new() else { return };
    let limits = berth.container_ok(&[
        "--ulimit",
        "nofile=100:200",
        IMAGE,
        "sh",
        "-c",
        "ulimit -n; ulimit -Hn",
    ]);
    assert_eq!(limits, "100\n200\n");
    // One value sets both.
    let limits = berth.container_ok(&[
        "--ulimit",
        "nofile=150",
        IMAGE,
        "sh",
        "-c",
        "ulimit -n; ulimit -Hn",
    ]);
    assert_eq!(limits, "150\n150\n");
}

#[test]
fn ulimit_nproc_bounds_a_fork_bomb() {
    let Some(berth) = Berth::new() else { return };
    let bomb = "i=0; while [ $i -lt 60 ]; do sleep 5 & i=$((i+1)); done; echo started $i";
    let args = [
        "run", "--rm", "--ulimit", "nproc=20", IMAGE, "sh", "-c", bomb,
    ];
    let out = berth.cmd(&args);
    assert!(
        !stdout(&out).contains("started 60"),
        "60 processes started under nproc=20: {}",
        describe(&args, &out)
    );
    assert!(
        stderr(&out).contains("fork"),
        "the shell reports that it cannot fork: {}",
        describe(&args, &out)
    );
    // The same loop runs to the end with room for it.
    let started = berth.container_ok(&["--ulimit", "nproc=500", IMAGE, "sh", "-c", bomb]);
    assert_eq!(started, "started 60\n");
}

#[test]
fn bad_ulimits_are_usage_errors() {
    let Some(berth) = Berth::new() else { return };
    for (bad, says) in [
        ("nofile=200:100", "soft limit"),
        ("files=10", "unknown name"),
        ("nofile", "NAME=SOFT[:HARD]"),
    ] {
        let args = ["run", "--rm", "--ulimit", bad, IMAGE, "true"];
        let out = berth.cmd(&args);
        assert_exit(&args, &out, 125);
        assert!(stderr(&out).contains(says), "{}", describe(&args, &out));
    }
}

#[test]
fn a_volume_on_the_root_is_refused_as_docker_does() {
    let Some(berth) = Berth::new() else { return };
    let dir = berth.host_mkdir("root-volume");
    let spec = format!("{}:/", dir.display());
    for args in [
        vec!["run", "--rm", "-v", &spec, IMAGE, "true"],
        vec!["run", "--rm", "-v", "data:/", IMAGE, "true"],
        vec![
            "run",
            "--rm",
            "--mount",
            "type=volume,source=v,target=/",
            IMAGE,
            "true",
        ],
    ] {
        let out = berth.cmd(&args);
        assert_exit(&args, &out, 125);
        assert!(
            stderr(&out).contains("can't be '/'"),
            "{}",
            describe(&args, &out)
        );
    }
}

#[test]
fn an_out_of_range_flag_value_exits_125() {
    let Some(berth) = Berth::new() else { return };
    for args in [
        vec![
            "run",
            "--rm",
            "--stop-timeout",
            "99999999999",
            IMAGE,
            "true",
        ],
        vec!["create", "--stop-timeout", "-5", "--name", "x", IMAGE],
        vec!["run", "--rm", "--no-such-flag", "1", IMAGE],
    ] {
        let out = berth.cmd(&args);
        assert_exit(&args, &out, 125);
        assert!(!stderr(&out).is_empty(), "{}", describe(&args, &out));
    }
    // --help is not an error.
    let out = berth.cmd(&["run", "--help"]);
    assert_eq!(code(&out), 0);
    assert!(
        stdout(&out).contains("--ulimit"),
        "run's flags list --ulimit"
    );
}

/// A small tmpfs for a store, mounted by the test process (root) and owned by the user.
struct SmallDisk(PathBuf);

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_full_disk_while_unpacking_says_so() {
    if !nix::unistd::Uid::effective().is_root() {
        common::skip("mounting a small tmpfs for the store needs the test process to be root");
        return;
    }
    let Some(probe) = Berth::options().no_image().start() else {
        return;
    };
    let (uid, gid) = (probe.identity.uid, probe.identity.gid);
    drop(probe);
    let dir = nix::unistd::mkdtemp("/tmp/berth-full-XXXXXX").expect("mkdtemp");
    let disk = SmallDisk(dir);
    // The image's blobs (about 1.2 MB) fit; its unpacked busybox (about 2 MB) does not.
    nix::mount::mount(
        Some("tmpfs"),
        &disk.0,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some(format!("size=2m,mode=0700,uid={uid},gid={gid}").as_str()),
    )
    .expect("mounting a small tmpfs");
    let store = disk.0.to_string_lossy().into_owned();
    let Some(berth) = Berth::options()
        .no_image()
        .env("BERTH_ROOT", &store)
        .start()
    else {
        return;
    };
    let archive = common::test_images().oci.to_string_lossy().into_owned();
    let load = ["load", "-i", &archive];
    let out = berth.cmd(&load);
    let (args, out) = if out.status.success() {
        let args = ["run", "--rm", IMAGE, "true"];
        let out = berth.cmd(&args);
        (args.to_vec(), out)
    } else {
        (load.to_vec(), out)
    };
    assert_ne!(code(&out), 0, "{}", describe(&args, &out));
    let err = stderr(&out);
    assert!(
        err.contains("no space left") && err.contains("BERTH_ROOT"),
        "a full disk is named as one, with what to do: {}",
        describe(&args, &out)
    );
    assert!(!err.contains("corrupt"), "{}", describe(&args, &out));
    drop(berth);
}
